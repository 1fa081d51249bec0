"""Pruning sweeps: a sweep spec plus a ``[prune]`` table, run resumably into the same store.

A prune spec is a sweep spec (``graphprior.spec``: same TOML, same checks, same one-line
errors) with a ``[prune]`` table naming the pruning schemes (``rnn_models.pruning.SCHEMES``),
the fractions to prune, the rounds, the retraining, the prunable weights and the
structure-alone controls. Every (run of the sweep x scheme x amount x weights x control) is
one :class:`PruneRunConfig`: a ``RunConfig`` with its pruning settings, so its ``run_id``
hashes them too, and its record goes into the same ``ResultsStore`` as any run, where
``graphprior table`` and ``graphprior predict`` read it unchanged.

One run: train the prior-initialised network (``train`` table), prune ``amount`` of its
prunable weights in ``rounds`` rounds, retraining ``retrain_epochs`` after each (or until an
epoch gains less than ``min_gain``), then apply the control:

* ``none``: the pruned, retrained network itself (always run);
* ``rewind``: survivors back to their initial values, trained again (Frankle & Carbin 2019);
* ``reinit``: survivors re-drawn at random, same mask, trained again;
* ``random_mask``: a random mask of the same per-matrix density inside the prior, initial
  values, trained again (Van Gelder, Wortsman & Ehsani 2020).

Controls train for the ``train`` table's epochs, the whole schedule. The runs that share a
trained network go to one worker together, which trains it once. A record's metrics hold
``trained_acc`` (before pruning), ``pruned_acc`` (right after the last pruning, or after the
control is applied), ``retrained_acc`` (= ``test_acc``, at the end), ``remaining`` (fraction
of the prunable weights left), ``weight_density`` (of the prunable matrices, dense = 1) and the
robustness curve to further magnitude pruning (``robustness_auc``, ``robust_acc_<percent>``);
its features are those of the pruned structure in a bench record's convention
(:func:`pruned_graphs`: undirected), its ``graph_id`` the fingerprint of its masks
(:func:`structure_id`) and its ``base_graph_id`` column that of the prior it was pruned from.
Each record is stored as soon as it is made (:func:`run_prune_group`), so a killed sweep
keeps a group's finished runs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib.resources
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from graphprior.spec import (
    PathError,
    RunConfig,
    SpecError,
    StrictModel,
    SweepSpec,
    expand,
    load_spec,
    preset_names,
    sample_runs,
    table_error,
    validate_spec,
)
from graphprior.store import RunRecord, store_errors
from graphprior.sweep import (
    SweepSummary,
    build_run,
    failure_record,
    graph_id,
    make_record,
    outcome,
    store_runs,
    structural_features,
    train_config,
)
from rnn_models.pruning import SCHEMES, WEIGHTS

CONTROLS = ("rewind", "reinit", "random_mask")
ROBUSTNESS_FRACTIONS = tuple(i / 10 for i in range(10))
"""Further-pruning fractions of the robustness curve stored with every run."""
_LIST_FIELDS = ("schemes", "amounts", "weights", "controls")


class PruneSettings(StrictModel):
    """The ``[prune]`` table of a prune spec. ``schemes``, ``amounts``, ``weights`` and
    ``controls`` take one value or a list (grid axes); ``amounts`` are the fractions of the
    prunable weights pruned in all ``rounds``; ``retrain_epochs`` (default: the ``train``
    table's epochs) retrain after each round, at most, when ``min_gain`` stops earlier.
    ``keep_weights`` saves each run's weights beside the store (not part of the run id).
    ``rewind_epoch`` k: the ``rewind`` control rewinds survivors to their values after epoch
    k of the training (late rewinding) instead of their initial values, and trains the rest
    of the schedule (the ``train`` table's epochs - k); it must be below those epochs."""

    schemes: tuple[Literal[SCHEMES], ...] = Field(default=("blinded",), min_length=1)
    amounts: tuple[float, ...] = Field(min_length=1)
    rounds: int = Field(default=1, ge=1, le=100)
    retrain_epochs: int | None = Field(default=None, ge=1)
    min_gain: float | None = Field(default=None, gt=0.0, lt=1.0)
    weights: tuple[Literal[WEIGHTS], ...] = Field(default=("both",), min_length=1)
    readout: bool = False
    per_gate: bool = False
    controls: tuple[Literal[CONTROLS], ...] = ()
    keep_weights: bool = False
    rewind_epoch: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _one_or_list(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: [v] if k in _LIST_FIELDS and isinstance(v, (str, int, float)) else v for k, v in data.items()}
        return data

    @field_validator("amounts")
    @classmethod
    def _check_amounts(cls, amounts: tuple[float, ...]) -> tuple[float, ...]:
        for i, amount in enumerate(amounts):
            if not 0.0 < amount < 1.0:
                raise PathError((i,), f"must be a fraction in (0, 1), got {amount!r}")
        return amounts


class PruneRun(StrictModel):
    """The pruning settings of one run (part of its config and run id)."""

    scheme: Literal[SCHEMES]
    amount: float
    weights: Literal[WEIGHTS]
    control: Literal[("none",) + CONTROLS]
    rounds: int
    retrain_epochs: int
    min_gain: float | None
    readout: bool
    per_gate: bool
    rewind_epoch: int | None = None
    """Set only for the ``rewind`` control (None: rewind to initialisation)."""


def _fields(run: RunConfig) -> dict[str, Any]:
    """A run config's fields (without its cached ids)."""
    return {name: getattr(run, name) for name in RunConfig.model_fields}


class PruneRunConfig(RunConfig):
    """A sweep run (``RunConfig``) pruned by ``prune``: trained, pruned, retrained, controlled."""

    prune: PruneRun

    def base(self) -> RunConfig:
        """The run whose trained network this run prunes."""
        return RunConfig(**_fields(self))

    def group_key(self) -> tuple:
        """Runs pruning the same trained network go to one worker, which trains it once."""
        return (self.base().run_id,)

    def flat(self) -> dict[str, Any]:
        return {**super().flat(), **{f"prune_{k}": v for k, v in self.prune.model_dump().items()}}

    def canonical(self) -> dict[str, Any]:
        """``RunConfig.canonical`` with ``prune.rewind_epoch`` left out at its default (None),
        so the run ids of specs written before it existed do not change."""
        data = super().canonical()
        if data["prune"].get("rewind_epoch") is None:
            data["prune"].pop("rewind_epoch", None)
        return data


@dataclass(frozen=True)
class PruneSpec:
    """A validated prune spec: the sweep whose runs are pruned and the ``[prune]`` table."""

    sweep: SweepSpec
    prune: PruneSettings

    @property
    def name(self) -> str:
        return self.sweep.name


# ---------------------------------------------------------------------------------------
# validation, loading, expansion
# ---------------------------------------------------------------------------------------


def validate_prune_spec(data: dict[str, Any] | PruneSpec) -> PruneSpec:
    """Validate a prune spec given as plain data: the sweep keys by ``validate_spec``, the
    ``[prune]`` table by :class:`PruneSettings`; raise ``SpecError`` with one line."""
    if isinstance(data, PruneSpec):
        return data
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a table of keys, got {type(data).__name__}")
    if not isinstance(data.get("prune"), dict):
        raise SpecError("prune: required table is missing (a prune spec is a sweep spec plus a [prune] table)")
    if "sparsity" in data:
        raise SpecError("sparsity: not allowed in a prune spec (prune trains static masks; "
                        "train sparse methods with graphprior bench run)")
    sweep = validate_spec({k: v for k, v in data.items() if k != "prune"})
    try:
        settings = PruneSettings.model_validate(data["prune"])
    except ValidationError as error:
        raise table_error("prune", PruneSettings, error) from None
    if settings.retrain_epochs is None:
        settings = settings.model_copy(update={"retrain_epochs": sweep.train.epochs})
    if settings.rewind_epoch is not None and settings.rewind_epoch >= sweep.train.epochs:
        raise SpecError(f"prune.rewind_epoch: must be below the train table's epochs ({sweep.train.epochs}), "
                        f"got {settings.rewind_epoch}")
    if settings.rewind_epoch is not None and "rewind" not in settings.controls:
        raise SpecError("prune.rewind_epoch: is only for the rewind control (add \"rewind\" to prune.controls)")
    return PruneSpec(sweep, settings)


def load_prune_spec(path: str | Path) -> PruneSpec:
    """Read and validate a TOML prune spec (``graphprior.spec.load_spec``)."""
    return load_spec(path, validate=validate_prune_spec)


def load_prune_preset(name: str) -> PruneSpec:
    """Load a shipped prune preset (``prune-demo``, ``prune-study``)."""
    names = preset_names(prune=True)
    if name not in names:
        raise SpecError(f"preset: unknown prune preset {name!r}; allowed: {', '.join(names)}")
    text = (importlib.resources.files("graphprior") / "presets" / f"{name}.toml").read_text(encoding="utf-8")
    return validate_prune_spec(tomllib.loads(text))


def expand_prune(spec: PruneSpec | dict[str, Any]) -> list[PruneRunConfig]:
    """All runs of a prune spec: every sweep run x weights x scheme x amount x control
    (``none`` first, then the spec's controls)."""
    spec = validate_prune_spec(spec)
    settings = spec.prune
    runs = []
    for base in expand(spec.sweep):
        for weights in settings.weights:
            for scheme in settings.schemes:
                for amount in settings.amounts:
                    for control in ("none", *settings.controls):
                        prune = PruneRun(scheme=scheme, amount=amount, weights=weights, control=control,
                                         rounds=settings.rounds, retrain_epochs=settings.retrain_epochs,
                                         min_gain=settings.min_gain, readout=settings.readout,
                                         per_gate=settings.per_gate,
                                         rewind_epoch=settings.rewind_epoch if control == "rewind" else None)
                        runs.append(PruneRunConfig(**_fields(base), prune=prune))
    return list({run.run_id: run for run in runs}.values())


def run_config_from(data: dict[str, Any]) -> RunConfig:
    """The run config of a stored record's ``config``: a ``PruneRunConfig`` when it has pruning."""
    return PruneRunConfig.model_validate(data) if "prune" in data else RunConfig.model_validate(data)


# ---------------------------------------------------------------------------------------
# one group of runs: train once, prune, control, record
# ---------------------------------------------------------------------------------------


def prunable_model(config: RunConfig, graphs: Sequence[Any], vocabulary_size: int, task: str) -> Any:
    """``graphprior.sweep.build_model``, with a maskable readout when the run prunes it."""
    from graphprior.sweep import build_model
    from rnn_models.mlp import mask_readout

    model = build_model(config, graphs, vocabulary_size, task)
    if isinstance(config, PruneRunConfig) and config.prune.readout:
        mask_readout(model)
    return model


def _find(model: Any, kind: type) -> tuple[str, Any] | None:
    """(path, module) of the first module of ``kind`` in ``model``, None when there is none."""
    return next(((path, m) for path, m in model.named_modules() if isinstance(m, kind)), None)


def _layered_adjacency(path: str, rnn: Any, masks: dict[str, Any]) -> np.ndarray:
    """The DAG of a ``LayeredRNN``'s units (layer after layer): ``[target, source]`` True per
    surviving connection weight between layers (any gate)."""
    widths = rnn.structure.widths
    offsets = np.concatenate([[0], np.cumsum(widths)])
    adjacency = np.zeros((offsets[-1], offsets[-1]), dtype=bool)
    prefix = f"{path}.layers" if path else "layers"
    for j in range(1, len(widths)):
        mask = masks[f"{prefix}.{j}.weight_ih_l0"]
        for b, source in enumerate(rnn.block_sources(j)):
            block = mask[rnn.block_slices(j, b)["weight_ih_l0"]].reshape(rnn.gates, widths[j], widths[source])
            rows, cols = np.nonzero(block.any(0).cpu().numpy())
            adjacency[offsets[j] + rows, offsets[source] + cols] = True
    return adjacency


def pruned_graphs(model: Any, per_gate: bool = False) -> list[Any]:
    """The structure of a (pruned) network as undirected igraph graphs, in the convention of a
    bench record's generator graph (``graphprior.sweep.structural_features``), so pruned and
    bench records share one feature table: for a masked RNN/LSTM/GRU the undirected graph of
    its surviving hidden-to-hidden connections (``i - j`` when ``j -> i`` or ``i -> j``
    survives in any gate block; self-connections left out, as generator graphs have none),
    one per gate block with ``per_gate`` (the ``per_gate`` gate layout, whose features are the
    mean over its graphs); for a ``LayeredRNN`` the undirected graph of its units (layer
    after layer) with an edge per surviving connection weight between layers, any gate. An
    unpruned symmetric prior gives back its generator graph (up to node order)."""
    from graphprior.priors import mask_to_graph
    from rnn_models.layered import LayeredRNN
    from rnn_models.pruning import model_masks

    masks = model_masks(model)
    layered = _find(model, LayeredRNN)
    if layered is not None:
        return [mask_to_graph(_layered_adjacency(*layered, masks), backend="igraph", directed=False)]
    path, rnn = next((p, m) for p, m in model.named_modules() if "weight_hh_l0" in getattr(m, "maskable_weights", ()))
    mask = masks[f"{path}.weight_hh_l0" if path else "weight_hh_l0"].cpu().numpy()
    hidden = mask.shape[1]
    blocks = mask.reshape(-1, hidden, hidden) & ~np.eye(hidden, dtype=bool)
    parts = list(blocks) if per_gate else [blocks.any(0)]
    return [mask_to_graph(part, backend="igraph", directed=False) for part in parts]


def pruned_graph(model: Any) -> Any:
    """The structure of a (pruned) network as one undirected igraph graph (:func:`pruned_graphs`,
    every gate block joined)."""
    return pruned_graphs(model)[0]


def pruned_features(model: Any, per_gate: bool = False) -> dict[str, float]:
    """``graphprior.sweep.structural_features`` of the network's structure (:func:`pruned_graphs`):
    the same features, in the same convention, as a bench record's."""
    from graphprior.sweep import structural_features

    return structural_features(pruned_graphs(model, per_gate))


def structure_id(model: Any) -> str:
    """The content fingerprint of a (pruned) network's structure: a hash of every mask it
    holds (``rnn_models.pruning.model_masks``: names, shapes, entries), 16 hex digits like
    ``graph_id``. Equal masks share it (a pruned network and its rewound or re-initialised
    controls); any other pruned entry, in any matrix, gives another."""
    import hashlib

    from rnn_models.pruning import model_masks

    digest = hashlib.sha256()
    for name, mask in sorted(model_masks(model).items()):
        entries = mask.detach().cpu().numpy().astype(bool)
        digest.update(f"{name}:{entries.shape}:".encode())
        digest.update(np.packbits(entries).tobytes())
    return digest.hexdigest()[:16]


def _density(model: Any, prune: PruneRun) -> float:
    """Fraction of the entries of the prunable matrices that hold a weight (dense: 1)."""
    from rnn_models.pruning import weight_classes

    classes = weight_classes(model, prune.weights, prune.readout, prune.per_gate)
    return sum(len(c.alive()) for c in classes) / sum(int(c.region.sum()) for c in classes)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


@dataclass
class _Trained:
    """A run's trained network, kept to be pruned: the built run, its weights at
    initialisation (``kept[0]``) and after the rewind epochs its runs ask for, its training
    history, the model as trained and its test accuracy."""

    built: Any
    kept: dict[int, dict[str, Any]]
    history: Any
    model: Any
    accuracy: float
    cpu_seconds: float


def _train_base(config: PruneRunConfig, rewind_epochs: Sequence[int] = ()) -> _Trained:
    """Build and train the network every run of the group prunes (``KeepWeights`` keeps its
    initial weights and those after each of ``rewind_epochs`` for the rewinds)."""
    from rnn_models.mlp import mask_readout
    from rnn_models.pruning import KeepWeights, accuracy
    from rnn_models.train import fit

    built = build_run(config)  # the base run's graphs, data and seeded model
    if config.prune.readout:
        mask_readout(built.model)
    keep = KeepWeights(epochs=(0, *rewind_epochs))
    cpu = time.process_time()
    history = fit(built.model, built.train, built.test, train_config(config), hooks=[keep])
    return _Trained(built, keep.weights, history, built.model,
                    accuracy(built.model, built.test, config.train.device), time.process_time() - cpu)


def _prune(trained: _Trained, config: PruneRunConfig) -> tuple[Any, list[Any]]:
    """A copy of the trained network pruned by ``config.prune`` in its rounds (with retraining)."""
    from rnn_models.pruning import iterative_pruning, per_round

    prune = config.prune
    model = copy.deepcopy(trained.model)
    retrain = dataclasses.replace(train_config(config), epochs=prune.retrain_epochs)
    rounds = iterative_pruning(model, trained.built.train, trained.built.test, retrain, prune.scheme,
                               per_round(prune.amount, prune.rounds), prune.rounds, prune.weights, prune.readout,
                               prune.per_gate, seed=config.seed, min_gain=prune.min_gain)
    return model, rounds


def _rewind_weights(trained: _Trained, epoch: int | None) -> dict[str, Any]:
    """The base network's kept weights after ``epoch`` (None: at initialisation)."""
    epoch = epoch or 0
    if epoch not in trained.kept:
        ended = len(trained.history.epochs)
        raise ValueError(f"prune.rewind_epoch {epoch}: the training ended after epoch {ended}, before it")
    return trained.kept[epoch]


def _control(trained: _Trained, pruned: Any, config: PruneRunConfig) -> tuple[Any, float, Any]:
    """The pruned network under ``config.prune.control`` (not ``none``), trained for the
    whole schedule (a rewind to epoch k: the rest of it, from epoch k): (model, accuracy
    before that training, its history)."""
    import torch

    from rnn_models.pruning import accuracy, model_masks, random_masks, reinit, rewind
    from rnn_models.train import fit

    prune, built = config.prune, trained.built
    model = copy.deepcopy(pruned)
    if prune.control == "reinit":
        torch.manual_seed(_seed(config.seed, 1))
        reinit(model, prunable_model(config, built.graphs, built.train.inputs.shape[-1], built.train.task))
    else:
        if prune.control == "random_mask":
            support = model_masks(trained.model)  # the prior: the structure before pruning
            random_masks(model, support, seed=_seed(config.seed, 2), weights=prune.weights,
                         readout=prune.readout, per_gate=prune.per_gate)
        rewind(model, _rewind_weights(trained, prune.rewind_epoch))
    schedule = train_config(config)
    if prune.rewind_epoch:
        schedule = dataclasses.replace(schedule, epochs=schedule.epochs - prune.rewind_epoch)
    before = accuracy(model, built.test, config.train.device)
    return model, before, fit(model, built.train, built.test, schedule)


def _prune_record(trained: _Trained, config: PruneRunConfig, model: Any, pruned_acc: float, remaining: float,
                  histories: Sequence[Any], seconds: float, cpu_seconds: float,
                  weights_dir: Path | None) -> RunRecord:
    """The record of one pruned run (see the module doc for its metrics and features)."""
    from rnn_models.pruning import robustness_curve

    prune, last = config.prune, histories[-1]
    status, reason = outcome(last)
    curve = robustness_curve(model, trained.built.test, ROBUSTNESS_FRACTIONS, weights=prune.weights,
                             readout=prune.readout, per_gate=prune.per_gate, device=config.train.device)
    metrics = {**last.final, "trained_acc": trained.accuracy, "pruned_acc": pruned_acc,
               "retrained_acc": last.final.get("test_acc", float("nan")), "remaining": remaining,
               "weight_density": _density(model, prune), "robustness_auc": curve.auc,
               **{f"robust_acc_{round(100 * f):02d}": a for f, a in zip(curve.fractions, curve.accuracy)},
               "fit_seconds": sum(h.seconds for h in histories), "cpu_seconds": cpu_seconds}
    history = [{**epoch, "round": float(r)} for r, h in enumerate(histories) for epoch in h.epochs]
    if weights_dir is not None:
        from graphprior.weights import save_weights

        stages = {"init": trained.kept[0], "final": model.state_dict()}
        if prune.rewind_epoch:
            stages["rewind"] = trained.kept[prune.rewind_epoch]
        save_weights(weights_dir, config.run_id, stages)
    per_gate = config.mapping == "recurrent" and config.gate_layout == "per_gate"
    structure = pruned_graphs(model, per_gate)
    record = make_record(config, status, reason, seconds=seconds, metrics=metrics, history=history,
                         features=structural_features(structure), graph_id=structure_id(model))
    record.flat["base_graph_id"] = graph_id(trained.built.graphs)  # the unpruned prior's graph_id
    if weights_dir is not None:
        record.flat["kept_weights"] = " ".join(stages)  # the store lists each run's weight files
    return record


def _group_records(configs: Sequence[PruneRunConfig], weights_dir: Path | None,
                   emit: Callable[[RunRecord], None] = lambda record: None) -> dict[str, RunRecord]:
    """Records of runs sharing one trained network: trained once, pruned once per setting;
    each record goes to ``emit`` as soon as it is made."""
    start = time.perf_counter()
    rewinds = sorted({c.prune.rewind_epoch for c in configs if c.prune.rewind_epoch})
    trained = _train_base(configs[0], rewinds)
    records: dict[str, RunRecord] = {}

    def finish(record: RunRecord) -> None:
        records[record.run_id] = record
        emit(record)

    def setting(config: PruneRunConfig) -> PruneRun:  # what the pruning itself depends on
        return config.prune.model_copy(update={"control": "none", "rewind_epoch": None})

    for shared in dict.fromkeys(setting(c) for c in configs):
        members = [c for c in configs if setting(c) == shared]
        cpu = time.process_time()
        try:
            pruned, rounds = _prune(trained, members[0])
        except Exception as error:  # noqa: BLE001 -- one setting's failure must not stop the others
            for config in members:
                finish(failure_record(config, error, time.perf_counter() - start))
            continue
        prune_cpu = time.process_time() - cpu
        pruning = [trained.history] + [r.history for r in rounds]
        for config in members:
            cpu = time.process_time()
            try:
                if config.prune.control == "none":
                    model, before, histories = pruned, rounds[-1].pruned_acc, pruning
                else:
                    model, before, history = _control(trained, pruned, config)
                    histories = [*pruning, history]
                cpu_seconds = trained.cpu_seconds + prune_cpu + time.process_time() - cpu
                record = _prune_record(trained, config, model, before, rounds[-1].remaining, histories,
                                       time.perf_counter() - start, cpu_seconds, weights_dir)
            except Exception as error:  # noqa: BLE001
                record = failure_record(config, error, time.perf_counter() - start)
            finish(record)
    return records


@contextlib.contextmanager
def _storing(store: str | Path | None) -> Iterator[Callable[[RunRecord], None]]:
    """A function storing one record into ``store`` at once (``ResultsStore.add``: a record
    stored already is left alone, so the driver storing it again adds nothing); one that does
    nothing without a store or where this process cannot open it (the driver stores then)."""
    from graphprior.store import ResultsStore, StoreError

    try:
        results = None if store is None else ResultsStore(store, create=False)
    except StoreError:
        results = None
    if results is None:
        yield lambda record: None
        return

    def add(record: RunRecord) -> None:
        try:
            with store_errors(results.path):
                results.add(record)
        except StoreError:
            pass  # e.g. the store is locked for longer than its timeout: the driver stores it later

    with results:
        yield add


def run_prune_group(configs: Sequence[PruneRunConfig], weights_dir: str | Path | None = None,
                    store: str | Path | None = None) -> list[RunRecord]:
    """A sweep's group trainer for prune runs sharing one trained network (their
    ``group_key``); any failure becomes a failed record. ``weights_dir``: save each run's
    initial (rewind epoch) and final weights there (``graphprior.weights``). ``store``: store
    each record there as soon as it is made, so a killed sweep keeps a group's finished runs
    (a resumed sweep trains the group's network again, not its stored runs)."""
    start = time.perf_counter()
    folder = None if weights_dir is None else Path(weights_dir)
    with _storing(store) as emit:
        try:
            records = _group_records(configs, folder, emit)
        except Exception as error:  # noqa: BLE001 -- e.g. the base training itself fails
            seconds = time.perf_counter() - start
            records = {config.run_id: failure_record(config, error, seconds) for config in configs}
            for record in records.values():
                emit(record)
    return [records[config.run_id] for config in configs]


def run_prune(spec: PruneSpec | dict[str, Any], store: str | Path, *, backend: str = "local",
              workers: int | None = None, address: str | None = None, limit: int | None = None,
              retry_failed: bool = False, progress: bool = True, executor: Any = None) -> SweepSummary:
    """Run every pending run of a prune spec into ``store`` (``graphprior.sweep.store_runs``:
    stored runs are skipped, each record is stored as soon as its run is done, so a killed
    sweep resumes without losing or duplicating runs). ``limit`` runs a seeded sample of that many runs.
    With ``keep_weights`` the weights go beside the store (``graphprior.weights``)."""
    from graphprior.executors import make_executor
    from graphprior.weights import weights_dir

    spec = validate_prune_spec(spec)
    runs = sample_runs(expand_prune(spec), limit, seed=spec.sweep.seed)
    folder = str(weights_dir(store)) if spec.prune.keep_weights else None
    if folder is not None:
        with store_errors(folder):  # an unwritable weights folder fails before any training
            Path(folder).mkdir(parents=True, exist_ok=True)
            tempfile.NamedTemporaryFile(dir=folder).close()
    # workers of this machine store each record as soon as it is made (a Ray worker may not
    # see the store's file: there the driver stores a group's records when it ends)
    early = None if backend == "ray" and executor is None else str(store)
    executor = executor or make_executor(backend, workers=workers, address=address)
    group_size = max(len(runs), 1)  # a group is every run of one trained network (group_key)
    group_fn = functools.partial(run_prune_group, weights_dir=folder, store=early)
    return store_runs(runs, store, group_fn, executor,
                      name=spec.name, retry_failed=retry_failed, group_size=group_size, progress=progress)
