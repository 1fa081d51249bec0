"""The study's layered architecture: per-connection layers vs fused layers vs ensembles.

Part ``fused``: forward + backward + clipped Adam step of one batch (batch 128, T = 25,
one-hot inputs of 7 symbols, sequence-classification head) for paper-like DAGs
(Barabási–Albert ``(n, n // 10)`` and connected Watts–Strogatz ``(n, n // 5, p = 1)``, n
uniform in 10..50, the study's layering), built as the study did (one recurrent layer per
connection: ``PerConnectionLayeredRNN`` below, the former ``LayeredRNN``) and as
``rnn_models.layered.LayeredRNN`` (one fused call per DAG layer), the latter both on
torch's recurrent kernels and on ``rnn_models.native``'s compiled ones, on the same
weights, interleaved and repeated.

Part ``ensemble``: for each cell type, K runs sampled (seeded) from the ``paper`` preset,
built exactly as the sweep builds them (``graphprior.sweep.prior_graphs``/``build_model``),
trained for one epoch on the preset's data (``--strings`` training strings, default all
18,750, and a third as many test strings, the preset's split) one after another with
``rnn_models.train.fit`` ("solo", on the compiled layers and, for comparison, on torch's
kernels) and all at once with ``rnn_models.ensemble_layered.fit_layered_ensemble``, on
copies of the same initial weights. Reported: models·epochs per CPU second of each and
their ratio, and the paper preset's seconds per model extrapolated from them: CPU seconds
per model-epoch x 15 epochs (each epoch costs the same: same data, same models), and half
that as the effective figure for 2 workers on 2 cores (the sweep's local pool), with the
faster of solo (compiled) and the ensemble per cell.

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
from rnn_models import native
from rnn_models.ensemble_layered import fit_layered_ensemble
from rnn_models.layered import LayeredRNN, LayeredStructure
from rnn_models.masked import make_rnn
from rnn_models.train import SequenceClassifier, fit

VOCABULARY = 7
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


class PerConnectionLayeredRNN(nn.Module):
    """The study's layout, one masked recurrent layer per connection (the former
    ``LayeredRNN``): ``layers[k]`` is the main path into DAG layer k, ``skips["s_to_t"]`` a
    skip connection; outputs of the skips into a layer are added to its main output.
    Batch-first padded inputs only. Kept as the reference the fused ``LayeredRNN`` must equal.
    """

    def __init__(self, structure: LayeredStructure, input_size: int, cell: str) -> None:
        super().__init__()
        self.structure = structure
        widths, recurrent = structure.widths, structure.recurrent_masks
        main = {c.target: c for c in structure.connections if not c.is_skip}

        def layer(in_size: int, target: int, ih_mask: torch.Tensor | None) -> nn.RNNBase:
            return make_rnn(cell, in_size, widths[target], batch_first=True, ih_mask=ih_mask,
                            hh_mask=None if recurrent is None else recurrent[target])

        self.layers = nn.ModuleList(
            layer(input_size if k == 0 else widths[k - 1], k, None if k == 0 else main[k].mask)
            for k in range(structure.depth))
        self.skips = nn.ModuleDict({f"{c.source}_to_{c.target}": layer(widths[c.source], c.target, c.mask)
                                    for c in structure.skip_connections})

    @property
    def output_size(self) -> int:
        return self.structure.widths[-1]

    def block_module(self, target: int, source: int) -> nn.RNNBase:
        """The recurrent layer of the connection ``source -> target`` (-1: the input)."""
        return self.layers[target] if source in (-1, target - 1) else self.skips[f"{source}_to_{target}"]

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        outputs = []
        for k, layer in enumerate(self.layers):
            out = layer(input if k == 0 else outputs[-1])[0]
            for c in self.structure.skip_connections:
                if c.target == k:
                    out = out + self.skips[f"{c.source}_to_{c.target}"](outputs[c.source])[0]
            outputs.append(out)
        return outputs[-1], ()


@torch.no_grad()
def copy_into_fused(reference: PerConnectionLayeredRNN, fused: LayeredRNN) -> None:
    """Give ``fused`` exactly the weights of ``reference``, block by block."""
    for j, layer in enumerate(fused.layers):
        for b, source in enumerate(fused.block_sources(j)):
            own = reference.block_module(j, source)
            for name, index in fused.block_slices(j, b).items():
                getattr(layer, name)[index] = getattr(own, name)


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


def step_timer(model: nn.Module, batch: int, steps: int, compiled: bool = True) -> Callable[[], float]:
    """A function doing one training step (fit's: BCE loss, clip 5, Adam) and returning its
    CPU seconds; ``compiled``: whether ``LayeredRNN`` may use ``rnn_models.native``."""
    generator = torch.Generator().manual_seed(0)
    inputs = nn.functional.one_hot(torch.randint(0, VOCABULARY, (batch, steps), generator=generator),
                                   VOCABULARY).float()
    lengths = torch.full((batch,), steps)
    targets = (torch.rand(batch, generator=generator) < 0.5).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        native.ENABLED = compiled
        start = time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.binary_cross_entropy_with_logits(model(inputs, lengths), targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        seconds = time.process_time() - start
        native.ENABLED = True
        return seconds

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
            fused = SequenceClassifier(LayeredRNN(structure, VOCABULARY, cell, batch_first=True))
            copy_into_fused(reference.rnn, fused.rnn)
            fused.readout.load_state_dict(reference.readout.state_dict())
            on_compiled = copy.deepcopy(fused)
            timers = (step_timer(reference, batch, steps), step_timer(fused, batch, steps, compiled=False),
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


def ensemble_part(cells: tuple[str, ...], count: int, strings: int, seed: int, batch_size: int | None) -> str:
    """Markdown table: models·epochs per CPU second, solo (compiled layers and torch's
    kernels) vs layered ensemble, and the extrapolated seconds per model of the paper preset."""
    lines = [f"One epoch of K = {count} sampled paper-preset runs per cell on {strings} training and "
             f"{strings // 3} test strings, batch {batch_size or 128}, CPU seconds; paper preset "
             "(18,750 + 6,250 strings, 15 epochs) extrapolated",
             "", "| cell | solo models·epochs/s | solo, torch kernels | ensemble models·epochs/s | ensemble / solo "
             "| paper s/model solo (1 worker) | solo, torch kernels | ensemble (1 worker) "
             "| effective s/model, 2 workers, faster way |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        runs = paper_runs(cell, count, seed)
        config = replace(train_config(runs[0]), epochs=1, batch_size=batch_size or train_config(runs[0]).batch_size)
        train, test = task_data(runs[0].task)
        train, test = subset(train, strings), subset(test, strings // 3)  # the preset's 3:1 split
        models = [sweep_model(run, train.inputs.shape[-1]) for run in runs]
        fit(copy.deepcopy(models[0]), subset(train, 256), subset(test, 256), config)  # warm-up
        solo = sum(cpu_seconds(lambda m=m: fit(m, train, test, config)) for m in copy.deepcopy(models))
        native.ENABLED = False
        solo_torch = sum(cpu_seconds(lambda m=m: fit(m, train, test, config)) for m in copy.deepcopy(models))
        native.ENABLED = True
        copies = copy.deepcopy(models)
        together = cpu_seconds(lambda: fit_layered_ensemble(copies, train, test, config, strategy="batched"))
        scale = 15 * (18750 / len(train.lengths))
        best = min(solo, together)
        lines.append(f"| {cell} | {count / solo:.3f} | {count / solo_torch:.3f} | {count / together:.3f} | "
                     f"{solo / together:.2f}x | {scale * solo / count:.1f} | {scale * solo_torch / count:.1f} | "
                     f"{scale * together / count:.1f} | {scale * best / count / 2:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller sample (a few minutes)")
    parser.add_argument("--part", choices=("all", "fused", "ensemble"), default="all")
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
    if args.part in ("all", "ensemble"):
        print()
        print(ensemble_part(CELLS, count=args.models or (4 if args.quick else 8),
                            strings=args.strings or (2048 if args.quick else 18750), seed=args.seed,
                            batch_size=args.batch_size))


if __name__ == "__main__":
    main()
