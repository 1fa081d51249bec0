"""Reber benchmark sweeps: every run of a spec, trained and stored, resumable.

:func:`run_sweep` expands a spec, skips runs already in the results store, sends the
rest in groups to an executor (:mod:`graphprior.executors`: local process pool, Ray, or
in-process) and writes each record as it arrives, so a sweep killed at any moment
resumes where it stopped. :func:`run_one` is one run: graph -> prior mask -> model ->
train -> evaluate -> structural features -> :class:`~graphprior.store.RunRecord`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import math
import platform
import time
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from graphprior.executors import Executor, LocalExecutor, SerialExecutor, make_executor
from graphprior.spec import RunConfig, SweepSpec, TaskSpec, data_file_digest, expand, sample_runs, validate_spec
from graphprior.store import Heartbeat, ResultsStore, RunRecord, new_owner, store_errors

RunFn = Callable[[RunConfig], RunRecord]
_REASON_CHARS = 500
_VERSIONED = ("graphprior", "torch", "numpy", "igraph", "networkx", "pydantic")


# ---------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a run's numbers depend on."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@functools.lru_cache(maxsize=4)
def task_data(task: TaskSpec) -> tuple[Any, Any]:
    """(train, test) datasets of a task, built once per worker process and cached."""
    from graphprior.continual import stream_task
    from reber.tasks import classification_data, continual_data, next_symbol_data

    if task.train_file is not None:
        return file_data(task)
    if task.kind == "classify":
        return classification_data(
            n=task.size, negatives=task.negatives, grammar=task.grammar,
            test_fraction=task.test_fraction, seed=task.seed, lengths=task.lengths,
        )
    n_test = max(1, round(task.size * task.test_fraction))
    n_train = max(1, task.size - n_test)
    if task.kind == "next_symbol":
        return next_symbol_data(grammar=task.grammar, n_train=n_train, n_test=n_test, seed=task.seed)
    if task.kind == "continual":
        return stream_task(n_train, n_test, streams=task.streams, window=task.window, seed=task.seed,
                           grammar=task.grammar, resets=task.reset == "strings")
    return continual_data(n_train=n_train, n_test=n_test, seed=task.seed)


def file_data(task: TaskSpec) -> tuple[Any, Any]:
    """(train, test) datasets of a task's data files, refused if the files changed since
    the spec was validated (their hash is part of the run's config)."""
    from reber.tasks import classification_vocabulary, encode_classification, encode_next_symbol, read_csv, read_lines

    if data_file_digest(task) != task.data_sha256:
        raise ValueError(f"the data files changed since the spec was validated ({task.train_file}, {task.test_file})")
    if task.kind == "classify":
        vocabulary = classification_vocabulary(task.grammar)
        return tuple(encode_classification(*read_csv(path), vocabulary) for path in (task.train_file, task.test_file))
    return tuple(encode_next_symbol(read_lines(path, task.grammar), task.grammar)
                 for path in (task.train_file, task.test_file))


def prior_graphs(config: RunConfig) -> list[Any]:
    """The run's graph, or one independent graph per gate block (``gate_layout = "per_gate"``).

    Gate 0 always uses the run's graph seed, so it is the graph of the tiled layout.
    """
    from graphprior.generators import generate
    from rnn_models.masked import GATES

    count = GATES[config.cell] if config.mapping == "recurrent" and config.gate_layout == "per_gate" else 1
    seeds = [config.graph_seed] + [
        int(s) for s in np.random.SeedSequence(config.graph_seed).generate_state(count - 1) >> 1
    ]
    return [generate(config.generator, **config.params, seed=seed) for seed in seeds[:count]]


def build_model(config: RunConfig, graphs: Sequence[Any], vocabulary_size: int, task: str) -> Any:
    """The prior-initialized network of a run with the readout its task needs."""
    from graphprior.priors import gate_mask, layered_structure, recurrent_mask
    from rnn_models.layered import GATE_MASKS, EmbeddedInput, LayeredRNN, PaddedPositionClassifier
    from rnn_models.masked import GATES, make_rnn
    from rnn_models.train import NextSymbolModel, SequenceClassifier

    padded = config.readout == "padded_position"
    if padded and task != "classify":
        raise ValueError(f"readout 'padded_position' is for classify tasks, not {task!r}")
    if config.mapping == "layered":
        structure = layered_structure(graphs[0])
        embedded = config.input_encoding == "embedding"
        features = structure.widths[0] if embedded else vocabulary_size
        rnn = LayeredRNN(structure, input_size=features, cell=config.cell, batch_first=True,
                         gate_masks="row_repeated" if config.gate_layout == "row_repeated" else "tiled")
        if embedded:
            rnn = EmbeddedInput(rnn, vocabulary_size, features, pad=padded)
    else:
        masks = [recurrent_mask(g, orientation=config.orientation, self_loops=config.self_loops,
                                seed=config.graph_seed) for g in graphs]
        mask = masks[0] if len(masks) == 1 else gate_mask(masks, config.cell)
        if config.gate_layout == "row_repeated":
            mask = GATE_MASKS["row_repeated"](mask, GATES[config.cell])
        if config.sparsity is not None and config.sparsity.prior == "none":
            mask = None  # the sparsity hook draws the mask; the prior only sets the size
        rnn = make_rnn(config.cell, input_size=vocabulary_size, hidden_size=graphs[0].vcount(),
                       batch_first=True, hh_mask=mask)
    if task == "classify":
        return PaddedPositionClassifier(rnn) if padded else SequenceClassifier(rnn)
    return NextSymbolModel(rnn, vocab_size=vocabulary_size, stateful=config.task.kind == "continual")


def structural_features(graphs: Sequence[Any]) -> dict[str, float]:
    """``graphprior.features.graph_features`` of the run's graph (the mean over per-gate graphs),
    with the attributes its generator recorded (``graphprior.generators.recorded_attributes``,
    e.g. ``edge_deviation`` from an edge budget)."""
    from graphprior.features import graph_features
    from graphprior.generators import recorded_attributes

    rows = [graph_features(g) | recorded_attributes(g) for g in graphs]
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


def train_config(config: RunConfig) -> Any:
    """The ``rnn_models.train.TrainConfig`` of a run: its training settings and seed."""
    from rnn_models.train import TrainConfig

    return TrainConfig(**config.train.model_dump(), seed=config.seed)


def run_one(config: RunConfig, hooks: Sequence[Any] = ()) -> RunRecord:
    """Train and evaluate one run: graph -> prior -> model -> fit -> features -> record.

    Besides the final epoch's metrics, ``metrics`` holds ``fit_seconds`` and ``cpu_seconds``:
    the wall-clock and CPU time of training and evaluation (CPU time stays meaningful on a
    busy machine); ``seconds`` of the record is the whole run. ``hooks`` go to
    ``rnn_models.train.fit``; what they record joins the run's history in the store. A run
    with a ``sparsity`` setting also trains with its hook (``graphprior.sparsity``), whose
    results join its record.
    """
    from rnn_models.train import fit

    start = time.perf_counter()
    built = build_run(config)
    sparse = _sparsity_hooks(built)
    cpu_start = time.process_time()
    history = fit(built.model, built.train, built.test, train_config(config), hooks=[*hooks, *sparse])
    cpu_seconds = time.process_time() - cpu_start
    return _finish(built, history, cpu_seconds, seconds=time.perf_counter() - start, sparsity=sparse)


def _sparsity_hooks(built: "BuiltRun") -> list[Any]:
    """The run's sparsity hook (``graphprior.sparsity.sparsity_hook``) in a list, or none."""
    from graphprior.sparsity import sparsity_hook

    return [] if built.config.sparsity is None else [sparsity_hook(built.config, built.train)]


def run_ensemble(configs: Sequence[RunConfig], engine: str = "auto", hooks: Sequence[Any] = ()) -> list[RunRecord]:
    """The group trainer: the group's runs that fit together go through one ``fit`` call.

    Runs of one cell type, mapping and hidden size are given to
    ``rnn_models.train.fit`` as one sequence of models, which trains them together as a
    stack where ``engine`` (``"auto"``: ``rnn_models.engines.choose_engine``) says so and
    one by one otherwise; the records equal those of :func:`run_one` up to float
    tolerance. CPU and wall seconds of a shared call are split evenly among its models.
    ``hooks`` go to ``fit`` (pass them with ``functools.partial`` as a sweep's ``group_fn``).
    Runs with a ``sparsity`` setting never join a stack: their hook trains one model at a
    time, so each goes through :func:`run_one`.
    """
    records: dict[str, RunRecord] = {}
    subgroups: dict[tuple, list[BuiltRun]] = {}
    for config in configs:
        if config.sparsity is not None:
            records[config.run_id] = guarded(functools.partial(run_one, hooks=hooks), config)
            continue
        start = time.perf_counter()
        try:
            built = build_run(config)
        except Exception as error:  # noqa: BLE001 -- one run's failure must not stop the sweep
            records[config.run_id] = failure_record(config, error, time.perf_counter() - start)
            continue
        size = built.graphs[0].vcount() if config.mapping == "recurrent" else None
        key = (config.cell, config.mapping, size)
        subgroups.setdefault(key, []).append(built)
    for members in subgroups.values():
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            histories = _fit_together(members, engine, hooks)
        except Exception as error:  # noqa: BLE001
            seconds = (time.perf_counter() - start) / len(members)
            records.update({m.config.run_id: failure_record(m.config, error, seconds) for m in members})
            continue
        cpu_share = (time.process_time() - cpu_start) / len(members)
        wall_share = (time.perf_counter() - start) / len(members)
        for member, history in zip(members, histories):
            try:
                records[member.config.run_id] = _finish(member, history, cpu_share, seconds=wall_share)
            except Exception as error:  # noqa: BLE001 -- e.g. features of an odd graph
                records[member.config.run_id] = failure_record(member.config, error, wall_share)
    return [records[config.run_id] for config in configs]


def _fit_together(members: Sequence["BuiltRun"], engine: str, hooks: Sequence[Any]) -> list[Any]:
    """One ``fit`` call for compatible built runs: their histories, in order."""
    from rnn_models.train import fit

    first = members[0]
    return fit([m.model for m in members], first.train, first.test, train_config(first.config), hooks=hooks,
               engine=engine)


@dataclass(frozen=True)
class BuiltRun:
    """A run made ready to train: its config, graphs, datasets and untrained model."""

    config: RunConfig
    graphs: list[Any]
    train: Any
    test: Any
    model: Any


def build_run(config: RunConfig) -> BuiltRun:
    """Graphs, datasets and the seeded, prior-initialized model of a run."""
    import torch

    graphs = prior_graphs(config)
    train, test = task_data(config.task)
    torch.manual_seed(config.seed)
    model = build_model(config, graphs, vocabulary_size=train.inputs.shape[-1], task=train.task)
    return BuiltRun(config, graphs, train, test, model)


def _finish(built: BuiltRun, history: Any, cpu_seconds: float, seconds: float,
            sparsity: Sequence[Any] = ()) -> RunRecord:
    """The record of a trained run: outcome, metrics, per-epoch history and features (with
    its ``sparsity`` hook: ``graphprior.sparsity.sparsity_results``, the final mask's features)."""
    status, reason = outcome(history)
    metrics = {**history.final, "fit_seconds": history.seconds, "cpu_seconds": cpu_seconds}
    if status == "done" and built.config.task.kind == "continual":
        metrics |= stream_metrics(built)
    epochs, features = list(history.epochs), None
    if sparsity:
        from graphprior.sparsity import sparsity_results

        extra, epochs, features = sparsity_results(built.config, built.model, sparsity[0], epochs)
        metrics |= extra
    return make_record(
        built.config, status, reason, seconds=seconds, metrics=metrics,
        history=epochs, features=features if features is not None else structural_features(built.graphs),
        graph_id=graph_id(built.graphs),
    )


def stream_metrics(built: BuiltRun) -> dict[str, float]:
    """The continual task's measures on one fresh stream run without reset, or with the
    task's external reset at string starts (``graphprior.continual.evaluate_stream``), as
    ``stream_*`` metrics."""
    from graphprior.continual import evaluate_stream

    task = built.config.task
    seed = int(np.random.SeedSequence([task.seed, built.config.seed]).generate_state(1)[0])
    report = evaluate_stream(built.model, symbols=task.stream_symbols, seed=seed, grammar=task.grammar,
                             device=built.config.train.device, resets=task.reset == "strings")
    return {f"stream_{name}": value for name, value in report.items()}


def outcome(history: Any) -> tuple[str, str | None]:
    """A record's status and reason from a ``History``: failed when training failed or a
    final metric is not finite; done (with an early stop's reason) otherwise."""
    if history.status != "done":
        return "failed", history.reason or "training failed"
    bad = [k for k, v in history.final.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        return "failed", f"non-finite final metric {bad[0]}"
    return "done", history.reason or None  # e.g. an early stop


def graph_id(graphs: Sequence[Any]) -> str:
    """The ``graph_id`` of a run: the content fingerprint of its graph (or of its per-gate
    graphs together), so runs on equal graphs share it whatever generator call drew them."""
    from graphprior.generators import graph_fingerprint

    prints = [graph_fingerprint(g) for g in graphs]
    return prints[0] if len(prints) == 1 else hashlib.sha256(":".join(prints).encode()).hexdigest()[:16]


def make_record(config: RunConfig, status: str, reason: str | None, seconds: float,
            graph_id: str | None = None, **results: Any) -> RunRecord:
    """A run's record. Its ``graph_id`` is always the content fingerprint: the given one,
    else (a run that failed before or after drawing its graph) that of the graph drawn
    again, which its seed makes the same; None when the graph cannot be drawn at all."""
    return RunRecord(
        run_id=config.run_id, graph_id=graph_id or _drawn_graph_id(config), seed=config.seed, status=status,
        reason=reason, config=config.canonical(), flat=config.flat(), seconds=seconds,
        versions=library_versions(), **results,
    )


def _drawn_graph_id(config: RunConfig) -> str | None:
    """``graph_id`` of the run's graphs drawn anew, None when its generator call fails."""
    try:
        return graph_id(prior_graphs(config))
    except Exception:  # noqa: BLE001 -- the run's failure reason already names the error
        return None


def guarded(run_fn: RunFn, config: RunConfig) -> RunRecord:
    """``run_fn(config)``, with any exception turned into a failed record naming it."""
    start = time.perf_counter()
    try:
        return run_fn(config)
    except Exception as error:  # noqa: BLE001 -- one run's failure must not stop the sweep
        return failure_record(config, error, time.perf_counter() - start)


def failure_record(config: RunConfig, error: Exception, seconds: float) -> RunRecord:
    """A failed record naming the exception that ended the run."""
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:_REASON_CHARS]
    return make_record(config, "failed", reason, seconds=seconds)


def run_group(configs: Sequence[RunConfig], run_fn: RunFn = run_one) -> list[RunRecord]:
    """The default group trainer: the runs of a group one after another."""
    return [guarded(run_fn, config) for config in configs]


# ---------------------------------------------------------------------------------------
# planning and the driver
# ---------------------------------------------------------------------------------------


def pending_runs(runs: Sequence[RunConfig], statuses: dict[str, str], retry_failed: bool = False,
                 taken: Container[str] = frozenset()) -> list[RunConfig]:
    """Runs still to do: not stored yet, or stored as failed when ``retry_failed``; runs in
    ``taken`` (under a live claim of another driver) are left to it."""
    redo = {"failed"} if retry_failed else set()
    return [r for r in runs if (r.run_id not in statuses or statuses[r.run_id] in redo) and r.run_id not in taken]


def group_runs(runs: Sequence[RunConfig], group_size: int = 1) -> list[list[RunConfig]]:
    """Split runs into groups of at most ``group_size`` with equal ``RunConfig.group_key``."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    by_key: dict[tuple, list[RunConfig]] = {}
    for run in runs:
        by_key.setdefault(run.group_key(), []).append(run)
    return [
        members[i : i + group_size]
        for members in by_key.values()
        for i in range(0, len(members), group_size)
    ]


@dataclass(frozen=True)
class SweepSummary:
    """What one call of :func:`run_sweep` did."""

    total: int
    skipped: int
    done: int
    failed: int
    seconds: float
    others: int = 0
    """Runs of this sweep stored meanwhile by other drivers sharing the store."""


def run_sweep(
    spec: SweepSpec | dict[str, Any],
    store: str | Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    limit: int | None = None,
    retry_failed: bool = False,
    group_size: int = 1,
    group_fn: Callable[[Sequence[RunConfig]], list[RunRecord]] | None = None,
    executor: Executor | None = None,
    progress: bool = True,
) -> SweepSummary:
    """Run every pending run of ``spec`` and store one record per run in ``store``.

    ``limit`` runs a seeded sample of that many runs of the spec (resuming within it).
    Runs sharing cell, node count, task, training settings and seed are sent to a worker
    in groups of up to ``group_size``; ``group_fn`` trains one group and must be picklable
    for the process and Ray backends (default: :func:`run_ensemble` for groups, which
    trains compatible runs together where that is faster, else :func:`run_group`).
    """
    spec = validate_spec(spec)
    group_fn = group_fn or (run_ensemble if group_size > 1 else run_group)
    runs = sample_runs(expand(spec), limit, seed=spec.seed)
    executor = executor or make_executor(backend, workers=workers, address=address)
    return store_runs(runs, store, group_fn, executor, name=spec.name, retry_failed=retry_failed,
                      group_size=group_size, progress=progress)


def store_runs(runs: Sequence[RunConfig], store: str | Path, group_fn: Callable[[Sequence[RunConfig]], list[RunRecord]],
               executor: Executor, *, name: str = "sweep", retry_failed: bool = False, group_size: int = 1,
               progress: bool = True) -> SweepSummary:
    """The driver of every sweep: skip the runs already in ``store``, send the rest in groups
    (``group_runs``) to ``executor``'s ``group_fn`` and store each record as it arrives, with
    a progress bar named ``name``.

    Several drivers may share ``store``: each claims its next groups in the store (as many as
    its executor asks for, :func:`claim_wave`) before training them and keeps the claims
    alive with a heartbeat, so each run is trained once. A driver whose remaining runs are all
    claimed by live drivers waits and re-checks until they are stored, or takes them over when
    their claims go stale (a killed driver). A run is still to do while its stored record (or
    its absence) is what it was when this driver started: a failed run is retried once.
    """
    start = time.perf_counter()
    owner = new_owner()
    with ResultsStore(store) as results:
        with store_errors(store):
            before = results.stored()
            todo = pending_runs(runs, {run_id: stored[0] for run_id, stored in before.items()}, retry_failed)
            if todo:
                results.check_writable()
            beat = results.claim_timeout() / BEATS_PER_TIMEOUT
        plan = ClaimPlan(todo, before, group_size, claim_wave(executor))
        counts = {"done": 0, "failed": 0}
        bar = tqdm(total=len(todo), unit="run", desc=name, disable=not progress, dynamic_ncols=True)
        with bar, (Heartbeat(store, owner, beat) if todo else contextlib.nullcontext()):
            try:
                while todo:
                    for records in executor.map_unordered(group_fn, plan.claimed(results, owner, store)):
                        for record in records:
                            with store_errors(store):
                                results.add(record, owner)
                            counts[record.status] += 1
                        bar.set_postfix(counts, refresh=False)
                        bar.update(counts["done"] + counts["failed"] + plan.others - bar.n)
                    bar.update(counts["done"] + counts["failed"] + plan.others - bar.n)
                    if not plan.waiting:
                        break
                    time.sleep(min(beat, WAIT_SECONDS))  # the rest is claimed by live drivers
            finally:
                if todo:
                    with store_errors(store):
                        results.release(owner)
    return SweepSummary(
        total=len(runs), skipped=len(runs) - len(todo), done=counts["done"],
        failed=counts["failed"], seconds=time.perf_counter() - start, others=plan.others,
    )


BEATS_PER_TIMEOUT = 6
"""A driver refreshes its claims six times per claim timeout."""
WAIT_SECONDS = 1.0
"""How often a driver whose remaining runs are claimed by others re-checks them (at most)."""


def claim_wave(executor: Executor) -> int | None:
    """Groups a driver claims per pull of its executor: one for an executor that asks for its
    next group when a worker frees (in-process, a local pool), so claims are the groups in
    flight and other drivers find the rest unclaimed; None (all of them) for an executor of
    unknown width, such as Ray, whose cluster schedules them."""
    return 1 if isinstance(executor, (SerialExecutor, LocalExecutor)) else None


@dataclass
class ClaimPlan:
    """The runs a driver set out to do (``todo``, with the store as it found it: ``before``),
    and what it claims next: the first ``wave`` groups of those still open and unclaimed."""

    todo: list[RunConfig]
    before: dict[str, tuple[str, str]]
    group_size: int
    wave: int | None
    attempted: set[str] = field(default_factory=set)
    others: int = 0  # runs of todo stored by other drivers
    waiting: bool = False  # open runs remain under live claims of other drivers

    def claim(self, results: ResultsStore, owner: str) -> list[list[RunConfig]]:
        """Claim the next groups in ``results`` (one transaction) and return them."""
        chosen: list[list[RunConfig]] = []

        def choose(stored: dict[str, tuple[str, str]], taken: set[str]) -> list[str]:
            fresh = [r for r in self.todo if r.run_id not in self.attempted]
            still_open = [r for r in fresh if stored.get(r.run_id) == self.before.get(r.run_id)]
            self.others = len(self.todo) - len(self.attempted) - len(still_open)
            free = [r for r in still_open if r.run_id not in taken]
            self.waiting = len(free) < len(still_open)
            chosen[:] = group_runs(free, self.group_size)[: self.wave]
            return [run.run_id for group in chosen for run in group]

        claimed = set(results.claim(owner, choose))
        groups = [[run for run in group if run.run_id in claimed] for group in chosen]
        self.attempted.update(claimed)
        return [group for group in groups if group]

    def claimed(self, results: ResultsStore, owner: str, store: str | Path) -> Iterator[list[RunConfig]]:
        """The groups to train, claimed as the executor asks for them (one wave per pull), so a
        worker that frees takes the next open group while the others keep training; ends when
        nothing is left unclaimed (``waiting`` then says whether other drivers hold the rest)."""
        while True:
            with store_errors(store):
                groups = self.claim(results, owner)
            if not groups:
                return
            yield from groups
