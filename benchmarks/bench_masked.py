"""Training throughput and peak memory: masked vs dense torch modules vs a per-step loop.

For every cell type and hidden size, three models learn the same batch side by side:
``dense`` (``torch.nn.RNN/LSTM/GRU``), ``masked`` (``rnn_models.masked`` with an 80 %
sparse ``weight_hh``, re-masked after each step as ``fit`` does) and ``loop``, the per-time-step masked layer of deepstruct 0.10
(``MaskedRecurrentLayer`` / ``MaskedGRULayer`` / ``MaskedLSTMLayer`` with ``unfold``),
when ``deepstruct`` is installed (``pip install deepstruct==0.10.0 --no-deps``). A step is
forward, backward and an Adam step; steps are interleaved and medians reported.

    python -m benchmarks.bench_masked            # H = 64 and 256, T = 30, batch 64
    python -m benchmarks.bench_masked --quick    # 10 instead of 50 steps per variant
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from rnn_models.masked import GATES, Remask, make_rnn

CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")
VOCAB = 7  # Reber alphabet


def deepstruct_layer(cell: str, hidden: int, mask: torch.Tensor) -> nn.Module | None:
    """deepstruct 0.10's per-time-step masked layer for ``cell``, or None if not installed."""
    try:
        from deepstruct import recurrent
    except ImportError:
        return None
    if cell == "lstm":
        layer = recurrent.MaskedLSTMLayer(VOCAB, hidden, batch_first=True)
    elif cell == "gru":
        layer = recurrent.MaskedGRULayer(VOCAB, hidden, batch_first=True)
    else:
        act = nn.Tanh() if cell == "rnn_tanh" else nn.ReLU()
        layer = recurrent.MaskedRecurrentLayer(VOCAB, hidden, batch_first=True, nonlinearity=act)
    layer.set_h2h_mask(mask.repeat(GATES[cell], 1))
    return layer


class LoopModel(nn.Module):
    """Runs a deepstruct layer over time from a zero state, as the study's code did."""

    def __init__(self, layer: nn.Module, cell: str, hidden: int) -> None:
        super().__init__()
        self.layer, self.cell, self.hidden = layer, cell, hidden

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        hx = x.new_zeros(x.shape[0], self.hidden)
        return self.layer.unfold(x, hx), None


def models(cell: str, hidden: int, density: float, seed: int) -> dict[str, nn.Module]:
    """The variants compared for one cell type and hidden size, each with a read-out."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(hidden, hidden, generator=gen) < density
    nonlinearity = {"nonlinearity": cell[4:]} if cell.startswith("rnn_") else {}
    dense_cls = {"gru": nn.GRU, "lstm": nn.LSTM}.get(cell, nn.RNN)
    variants = {
        "dense": dense_cls(VOCAB, hidden, batch_first=True, **nonlinearity),
        "masked": make_rnn(cell, VOCAB, hidden, batch_first=True, hh_mask=mask),
    }
    layer = deepstruct_layer(cell, hidden, mask)
    if layer is not None:
        variants["loop"] = LoopModel(layer, cell, hidden)
    return {name: nn.ModuleDict({"rnn": rnn, "head": nn.Linear(hidden, 1)})
            for name, rnn in variants.items()}


def train_step(model: nn.ModuleDict, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A closure doing forward, backward and one Adam step on the fixed batch, then what
    ``rnn_models.train.fit`` does after a step: re-mask (``Remask``; nothing for dense models)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    remask = Remask(model)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model["head"](model["rnn"](x)[0][:, -1]).squeeze(1)
        nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
        optimizer.step()
        remask()

    return step


def peak_memory_mib(step: Callable[[], None]) -> float:
    """Peak of bytes allocated and not yet freed during one step (torch profiler, CPU)."""
    step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def measure(cell: str, hidden: int, args: argparse.Namespace) -> dict[str, float]:
    """Sequences/s of every variant from the median step time, and peak memory.

    Steps are interleaved one by one in rotating order, so load from other processes hits
    every variant alike; the median discards disturbed steps.
    """
    torch.manual_seed(args.seed)
    x = nn.functional.one_hot(torch.randint(0, VOCAB, (args.batch, args.steps)), VOCAB).float()
    y = torch.randint(0, 2, (args.batch,)).float()
    variants = models(cell, hidden, 1 - args.sparsity, args.seed)
    steps = {name: train_step(m, x, y) for name, m in variants.items()}
    for step in steps.values():
        step()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate: no position bias
            start = time.perf_counter()
            steps[name]()
            seconds[name].append(time.perf_counter() - start)
    row = {name: args.batch / statistics.median(s) for name, s in seconds.items()}
    row.update({f"mem_{name}": peak_memory_mib(steps[name]) for name in ("dense", "masked")})
    return row


def table(rows: list[tuple[str, int, dict[str, float]]]) -> str:
    head = ("| cell | H | dense seq/s | masked seq/s | loop seq/s | masked/dense | masked/loop "
            "| peak MiB dense | peak MiB masked |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for cell, hidden, r in rows:
        loop = f"{r['loop']:.0f}" if "loop" in r else "-"
        speedup = f"{r['masked'] / r['loop']:.1f}x" if "loop" in r else "-"
        lines.append(
            f"| {cell} | {hidden} | {r['dense']:.0f} | {r['masked']:.0f} | {loop} | "
            f"{r['masked'] / r['dense']:.2f}x | {speedup} | "
            f"{r['mem_dense']:.1f} | {r['mem_masked']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds instead of 50")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--steps", type=int, default=30, help="sequence length T")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sparsity", type=float, default=0.8, help="fraction of weight_hh masked")
    parser.add_argument("--rounds", type=int, default=50, help="training steps per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.rounds = 10
    torch.set_num_threads(args.threads)
    rows = [(cell, hidden, measure(cell, hidden, args)) for hidden in args.hidden for cell in args.cells]
    print(f"torch {torch.__version__}, {args.threads} thread(s), T={args.steps}, batch {args.batch}, "
          f"{args.sparsity:.0%} sparse weight_hh, median of {args.rounds} interleaved steps each")
    print(table(rows))


if __name__ == "__main__":
    main()
