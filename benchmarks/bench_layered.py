"""The study's layered architecture: per-connection layers vs fused layers, on each engine.

Part ``fused``: forward + backward + clipped Adam step of one batch (batch 128, T = 25,
one-hot inputs of 7 symbols, sequence-classification head) for paper-like DAGs
(Barabási–Albert ``(n, n // 10)`` and connected Watts–Strogatz ``(n, n // 5, p = 1)``, n
uniform in 10..50, the study's layering), built as the study did (one recurrent layer per
connection: ``rnn_models.layered.PerConnectionLayeredRNN``) and as
``rnn_models.layered.LayeredRNN`` (one fused call per DAG layer), the latter both on
torch's recurrent kernels (``engine="torch"``) and on ``rnn_models.native``'s compiled
ones (``engine="compiled"``), on the same weights, interleaved and repeated.

Part ``paper``: for each cell type, K runs sampled (seeded) from the ``paper`` preset,
built exactly as the sweep builds them (``graphprior.sweep.prior_graphs``/``build_model``),
trained for one epoch on the preset's data (``--strings`` training strings, default all
18,750, and a third as many test strings, the preset's split) one after another with
``rnn_models.train.fit``, on the compiled network and on torch's kernels, from copies of
the same initial weights. Reported: models·epochs per CPU second of each and their ratio,
and the paper preset's seconds per model extrapolated from them: CPU seconds per
model-epoch x 15 epochs (each epoch costs the same: same data, same models), and half that
as the effective figure for 2 workers on 2 cores (the sweep's local pool).

Times are CPU seconds (``time.process_time``, one torch thread): wall time is unreliable
on the shared machine.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_layered            # all parts
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_layered --quick    # smaller sample
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from graphprior.generators import generate
from graphprior.priors import layered_structure
from graphprior.spec import expand, load_preset, sample_runs
from graphprior.sweep import build_model, prior_graphs, task_data, train_config
from rnn_models.layered import LayeredRNN, LayeredStructure, PerConnectionLayeredRNN
from rnn_models.train import SequenceClassifier, fit

VOCABULARY = 7
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


def paper_structures(count: int, seed: int) -> list[LayeredStructure]:
    """``count`` seeded paper-like layered structures, alternating BA and WS graphs."""
    rng = random.Random(seed)
    structures = []
    for i in range(count):
        n = rng.randint(10, 50)
        if i % 2 == 0:
            graph = generate("barabasi_albert", n=n, m=max(1, n // 10), seed=rng.randrange(2**31))
        else:
            graph = generate("connected_watts_strogatz", n=n, k=n // 5, p=1.0, seed=rng.randrange(2**31))
        structures.append(layered_structure(graph))
    return structures


def step_timer(model: nn.Module, batch: int, steps: int) -> Callable[[], float]:
    """A function doing one training step (fit's: BCE loss, clip 5, Adam) and returning its
    CPU seconds."""
    generator = torch.Generator().manual_seed(0)
    inputs = nn.functional.one_hot(torch.randint(0, VOCABULARY, (batch, steps), generator=generator),
                                   VOCABULARY).float()
    lengths = torch.full((batch,), steps)
    targets = (torch.rand(batch, generator=generator) < 0.5).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        start = time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.binary_cross_entropy_with_logits(model(inputs, lengths), targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        return time.process_time() - start

    return step


def fused_part(structures: list[LayeredStructure], repeats: int, batch: int, steps: int) -> str:
    """Markdown table: ms per training step, per-connection vs fused (torch's kernels and
    the compiled ones), per cell type."""
    lines = [f"Training step (forward + backward + clip + Adam), batch {batch}, T = {steps}; "
             f"{len(structures)} paper-like DAGs, median of {repeats} interleaved repetitions, CPU ms",
             "", "| cell | recurrent calls per forward (old -> new) | per-connection ms/step | fused, torch kernels "
             "| fused, compiled (`rnn_models.native`) | fused / per-connection (torch) | compiled / torch kernels |",
             "|---|---|---|---|---|---|---|"]
    for cell in CELLS:
        old_total = new_total = compiled_total = 0.0
        old_calls = sum(len(s.connections) + 1 for s in structures)
        new_calls = sum(s.depth for s in structures)
        for structure in structures:
            torch.manual_seed(0)
            reference = SequenceClassifier(PerConnectionLayeredRNN(structure, VOCABULARY, cell))
            fused = SequenceClassifier(LayeredRNN(structure, VOCABULARY, cell, batch_first=True, engine="torch"))
            reference.rnn.copy_into(fused.rnn)
            fused.readout.load_state_dict(reference.readout.state_dict())
            on_compiled = copy.deepcopy(fused)
            on_compiled.rnn.engine = "compiled"
            timers = (step_timer(reference, batch, steps), step_timer(fused, batch, steps),
                      step_timer(on_compiled, batch, steps))
            for timer in timers:  # warm-up: oneDNN primitive creation, lazy init, kernel compilation
                timer()
            old, new, compiled = [], [], []
            for _ in range(repeats):
                old.append(timers[0]())
                new.append(timers[1]())
                compiled.append(timers[2]())
            old_total += statistics.median(old)
            new_total += statistics.median(new)
            compiled_total += statistics.median(compiled)
        count = len(structures)
        lines.append(f"| {cell} | {old_calls / count:.1f} -> {new_calls / count:.1f} | "
                     f"{1000 * old_total / count:.1f} | {1000 * new_total / count:.1f} | "
                     f"{1000 * compiled_total / count:.1f} | {old_total / new_total:.2f}x | "
                     f"{new_total / compiled_total:.2f}x |")
    return "\n".join(lines)


def paper_runs(cell: str, count: int, seed: int) -> list:
    """``count`` seeded runs (``RunConfig``) of the paper preset with cell ``cell``."""
    return sample_runs([r for r in expand(load_preset("paper")) if r.cell == cell], count, seed=seed)


def sweep_model(run: object, vocabulary: int) -> nn.Module:
    """The run's untrained model, built as the sweep builds it."""
    graphs = prior_graphs(run)
    torch.manual_seed(run.seed)
    return build_model(run, graphs, vocabulary_size=vocabulary, task="classify")


def subset(data: object, count: int) -> object:
    """The first ``count`` sequences of a dataset (all of them when ``count`` is larger)."""
    picked = copy.copy(data)
    for name in ("inputs", "lengths", "targets"):
        setattr(picked, name, getattr(data, name)[:count])
    return picked


def cpu_seconds(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def with_engine(models: list[nn.Module], engine: str) -> list[nn.Module]:
    """Copies of layered models whose ``LayeredRNN`` runs on ``engine``."""
    copies = copy.deepcopy(models)
    for model in copies:
        model.rnn.engine = engine
    return copies


def paper_part(cells: tuple[str, ...], count: int, strings: int, seed: int, batch_size: int | None) -> str:
    """Markdown table: models·epochs per CPU second of one-by-one training on the compiled
    network and on torch's kernels, and the extrapolated seconds per model of the paper preset."""
    lines = [f"One epoch of K = {count} sampled paper-preset runs per cell on {strings} training and "
             f"{strings // 3} test strings, batch {batch_size or 128}, CPU seconds; paper preset "
             "(18,750 + 6,250 strings, 15 epochs) extrapolated",
             "", "| cell | compiled models·epochs/s | torch kernels models·epochs/s | compiled / torch "
             "| paper s/model compiled (1 worker) | torch kernels (1 worker) | effective s/model, 2 workers |",
             "|---|---|---|---|---|---|---|"]
    for cell in cells:
        runs = paper_runs(cell, count, seed)
        config = replace(train_config(runs[0]), epochs=1, batch_size=batch_size or train_config(runs[0]).batch_size)
        train, test = task_data(runs[0].task)
        train, test = subset(train, strings), subset(test, strings // 3)  # the preset's 3:1 split
        models = [sweep_model(run, train.inputs.shape[-1]) for run in runs]
        fit(copy.deepcopy(models[0]), subset(train, 256), subset(test, 256), config)  # warm-up
        on_compiled, on_kernels = with_engine(models, "compiled"), with_engine(models, "torch")
        compiled = cpu_seconds(lambda: fit(on_compiled, train, test, config, engine="separate"))
        on_torch = cpu_seconds(lambda: fit(on_kernels, train, test, config, engine="separate"))
        scale = 15 * (18750 / len(train.lengths))
        lines.append(f"| {cell} | {count / compiled:.3f} | {count / on_torch:.3f} | {on_torch / compiled:.2f}x | "
                     f"{scale * compiled / count:.1f} | {scale * on_torch / count:.1f} | "
                     f"{scale * compiled / count / 2:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller sample (a few minutes)")
    parser.add_argument("--part", choices=("all", "fused", "paper"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=int, default=None, help="K runs per cell (default 8, quick 4)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's 128")
    parser.add_argument("--strings", type=int, default=None,
                        help="training strings per epoch (default 18750, quick 2048)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part in ("all", "fused"):
        structures = paper_structures(4 if args.quick else 10, args.seed)
        print(fused_part(structures, repeats=3 if args.quick else 5, batch=128, steps=25))
    if args.part in ("all", "paper"):
        print()
        print(paper_part(CELLS, count=args.models or (4 if args.quick else 8),
                            strings=args.strings or (2048 if args.quick else 18750), seed=args.seed,
                            batch_size=args.batch_size))


if __name__ == "__main__":
    main()
