"""The CUDA path, side by side in one run: masked vs dense modules, the layered network on
torch's kernels, and K models trained one by one vs as one stack.

Needs a CUDA device (skips with a message otherwise) and only torch, numpy and ``reber``
(no graph library: layered structures are drawn here at random, paper-like sizes).

1. **masked / dense**: one training step (forward, backward, Adam; batch 64, T = 30) of
   ``torch.nn`` modules and of ``rnn_models.masked`` modules with an 80 % sparse
   ``weight_hh`` (re-masked by ``Remask`` after each step), H = 64 and 256, median of
   interleaved CUDA-event timings;
2. **layered**: ``LayeredRNN(engine="torch")`` on CUDA, ms per training step (batch 128,
   T = 25) for random DAG structures of 5-12 layers, 1-8 units wide;
3. **stack**: ``fit`` of K masked LSTMs (H units, next-symbol embedded Reber, 512 strings,
   2 epochs) with ``engine="separate"`` and ``engine="batched"`` on CUDA for the sizes of
   ``STACK_SIZES``, wall seconds, and the largest difference between the two runs' final
   metrics (they must agree to float tolerance);
4. **correctness**: after a CUDA ``fit`` with a hook, masked weights are exactly zero and
   the hook's records are in the history; **training** (``--part training``): pruning and
   retraining, SET, RigL and DNW, and stateful streams on CUDA keep the properties their
   CPU tests check (zeros stay zero, constant density, carried state = whole stream).

    python -m benchmarks.bench_cuda            # about a minute on an H200
    python -m benchmarks.bench_cuda --part stack
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from reber.tasks import next_symbol_data
from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure
from rnn_models.masked import Remask, make_rnn
from rnn_models.train import Hook, NextSymbolModel, SequenceClassifier, TrainConfig, TrainState, fit

CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")
TORCH = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
VOCAB = 7


def cuda_ms(step: Callable[[], None], repeats: int) -> float:
    """Median milliseconds of ``step`` timed with CUDA events after three warm-ups."""
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def train_step(model: nn.Module, x: torch.Tensor, remask: Callable[[], None] | None = None) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(x)[0].square().mean().backward()
        optimizer.step()
        if remask is not None:
            remask()

    return step


def masked_part(repeats: int) -> list[str]:
    lines = ["| cell | H | dense ms/step | masked ms/step | masked / dense throughput |", "|---|---|---|---|---|"]
    for cell in CELLS:
        for hidden in (64, 256):
            torch.manual_seed(0)
            x = torch.randn(64, 30, VOCAB, device="cuda")
            kwargs = {"nonlinearity": cell[4:]} if cell.startswith("rnn_") else {}
            dense = TORCH[cell](VOCAB, hidden, batch_first=True, **kwargs).cuda()
            masked = make_rnn(cell, VOCAB, hidden, batch_first=True,
                              hh_mask=torch.rand(hidden, hidden) < 0.2).cuda()
            steps = {"dense": train_step(dense, x), "masked": train_step(masked, x, Remask(masked))}
            times: dict[str, list[float]] = {"dense": [], "masked": []}
            for _ in range(3):  # interleaved rounds
                for name, step in steps.items():
                    times[name].append(cuda_ms(step, repeats))
            d, m = statistics.median(times["dense"]), statistics.median(times["masked"])
            lines.append(f"| {cell} | {hidden} | {d:.3f} | {m:.3f} | {d / m:.2f}x |")
    return lines


def random_structure(generator: torch.Generator) -> LayeredStructure:
    """A paper-like DAG layering: 5-12 layers of 1-8 units, main path and a few skips."""
    depth = int(torch.randint(5, 13, (1,), generator=generator))
    widths = [int(w) for w in torch.randint(1, 9, (depth,), generator=generator)]
    connections = []
    for target in range(1, depth):
        for source in range(target):
            if source == target - 1 or float(torch.rand(1, generator=generator)) < 0.15:
                mask = torch.rand(widths[target], widths[source], generator=generator) < 0.6
                connections.append(LayerConnection(source, target, mask))
    return LayeredStructure(widths, connections)


def layered_part(count: int, repeats: int) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    structures = [random_structure(generator) for _ in range(count)]
    lines = [f"| cell | CUDA ms/step, torch engine (mean of {count} DAGs) | DAG layers (mean) |", "|---|---|---|"]
    for cell in CELLS:
        total = 0.0
        for structure in structures:
            model = SequenceClassifier(LayeredRNN(structure, VOCAB, cell, batch_first=True, engine="torch")).cuda()
            x = torch.randn(128, 25, VOCAB, device="cuda")
            lengths = torch.full((128,), 25, device="cuda")
            targets = (torch.rand(128, device="cuda") < 0.5).float()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step(model: nn.Module = model, optimizer: torch.optim.Optimizer = optimizer) -> None:
                optimizer.zero_grad(set_to_none=True)
                nn.functional.binary_cross_entropy_with_logits(model(x, lengths), targets).backward()
                optimizer.step()

            total += cuda_ms(step, repeats)
        depth = sum(s.depth for s in structures) / count
        lines.append(f"| {cell} | {total / count:.2f} | {depth:.1f} |")
    return lines


def stack_models(count: int, hidden: int = 32) -> list[NextSymbolModel]:
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        rnn = make_rnn("lstm", VOCAB, hidden, batch_first=True, hh_mask=torch.rand(hidden, hidden) < 0.2)
        models.append(NextSymbolModel(rnn, VOCAB))
    return models


STACK_SIZES = [(32, 32, 16), (32, 32, 128), (4, 32, 32), (8, 32, 128), (16, 32, 128), (16, 128, 128),
               (16, 256, 32), (64, 32, 128)]
"""(K, H, batch) of the stack part."""


def stack_part(sizes: list[tuple[int, int, int]]) -> list[str]:
    train, test = next_symbol_data("embedded", n_train=512, n_test=256, seed=0)
    lines = ["| K | H | batch | separate s | batched s | batched / separate speed | largest metric difference |",
             "|---|---|---|---|---|---|---|"]
    for count, hidden, batch in sizes:
        config = TrainConfig(epochs=2, batch_size=batch, device="cuda", clip=5.0)
        fit(stack_models(2, hidden), train, test, TrainConfig(epochs=1, batch_size=batch, device="cuda"),
            engine="batched")
        results, seconds = {}, {}
        for engine in ("separate", "batched"):
            models = stack_models(count, hidden)
            torch.cuda.synchronize()
            start = time.perf_counter()
            results[engine] = fit(models, train, test, config, engine=engine)
            torch.cuda.synchronize()
            seconds[engine] = time.perf_counter() - start
        worst = max(abs(a.final[key] - b.final[key]) for a, b in zip(results["separate"], results["batched"])
                    for key in ("test_loss", "test_acc"))
        lines.append(f"| {count} | {hidden} | {batch} | {seconds['separate']:.2f} | {seconds['batched']:.2f} | "
                     f"{seconds['separate'] / seconds['batched']:.2f}x | {worst:.2e} |")
    return lines


class WeightNorm(Hook):
    def on_epoch_end(self, state: TrainState) -> None:
        with torch.no_grad():
            state.record("weight_norm", float(torch.cat([p.reshape(-1) for p in state.model.parameters()]).norm()))


def correctness_part() -> list[str]:
    train, test = next_symbol_data("embedded", n_train=256, n_test=128, seed=1)
    torch.manual_seed(0)
    mask = torch.rand(16, 16) < 0.3
    model = NextSymbolModel(make_rnn("gru", VOCAB, 16, batch_first=True, hh_mask=mask), VOCAB)
    history = fit(model, train, test, TrainConfig(epochs=2, batch_size=32, device="cuda", lr=0.01,
                                                  weight_decay=0.1, optimizer="adamw"), hooks=[WeightNorm()])
    weight = model.rnn.weight_hh_l0
    zero = bool((weight[~mask.repeat(3, 1).cuda()] == 0).all())
    recorded = all("weight_norm" in epoch for epoch in history.epochs)
    return [f"- CUDA fit of a masked GRU: status {history.status}, test_acc {history.final['test_acc']:.3f}, "
            f"masked weights exactly zero: {zero}, hook records in every epoch: {recorded}"]


def new_training_part() -> list[str]:
    """Pruning, sparse training and stateful streams on CUDA: the properties their tests
    check on a CPU, checked again on the device."""
    from reber.tasks import stream_data
    from rnn_models.dynamic import DNW, SET, RigL, Schedule
    from rnn_models.pruning import prune
    from rnn_models.train import predict

    train, test = next_symbol_data("embedded", n_train=256, n_test=128, seed=2)
    config = TrainConfig(epochs=2, batch_size=32, device="cuda", lr=0.01, weight_decay=0.01)
    lines = []
    torch.manual_seed(0)
    model = NextSymbolModel(make_rnn("lstm", VOCAB, 32, batch_first=True), VOCAB).cuda()
    fit(model, train, test, config)
    prune(model, "blinded", 0.8)
    mask = model.rnn.masks["weight_hh_l0"]
    history = fit(model, train, test, config)
    zero = bool((model.rnn.weight_hh_l0[~mask] == 0).all())
    lines.append(f"- pruned 80 % (blinded) and retrained on CUDA with Adam + weight decay: status {history.status}, "
                 f"pruned weights exactly zero: {zero}, hh density {float(mask.float().mean()):.3f}")
    for hook in (SET(0.2, Schedule(update_every=4, drop_fraction=0.3, end_step=12)),
                 RigL(0.2, Schedule(update_every=4, drop_fraction=0.3, end_step=12)), DNW(0.2)):
        torch.manual_seed(1)
        model = NextSymbolModel(make_rnn("gru", VOCAB, 32, batch_first=True), VOCAB)
        history = fit(model, train, test, config, hooks=[hook])
        density = [round(e["mask_density"], 4) for e in history.epochs]
        masks = model.rnn.masks
        zero = all(bool((getattr(model.rnn, n)[~m] == 0).all()) for n, m in masks.items())
        lines.append(f"- {type(hook).__name__} on CUDA: status {history.status}, density per epoch {density}, "
                     f"masked weights exactly zero: {zero}, test_acc {history.final['test_acc']:.3f}")
    torch.manual_seed(2)
    model = NextSymbolModel(make_rnn("lstm", VOCAB, 16, batch_first=True), VOCAB, stateful=True)
    streams = stream_data(streams=4, windows=5, window=20, seed=3)
    history = fit(model, streams, stream_data(streams=2, windows=5, window=20, seed=4), config)
    logits = predict(model, streams, device="cuda")
    whole = torch.stack([torch.cat([streams.inputs[w * 4 + s] for w in range(5)]) for s in range(4)]).cuda()
    model.stateful = False
    with torch.no_grad():
        expected = model.eval()(whole, torch.full((4,), 100, device="cuda"))
    carried = torch.stack([torch.cat([logits[w * 4 + s] for w in range(5)]) for s in range(4)])
    error = float((carried - expected).abs().max())
    lines.append(f"- stateful LSTM on CUDA streams: status {history.status}, carried state vs whole stream "
                 f"max |difference| {error:.2e}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dags", type=int, default=8)
    parser.add_argument("--part", choices=("all", "stack", "training"), default="all")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    parts = {"correctness": correctness_part, "training": new_training_part,
             "masked / dense": lambda: masked_part(args.repeats),
             "layered": lambda: layered_part(args.dags, args.repeats), "stack": lambda: stack_part(STACK_SIZES)}
    for title, part in parts.items():
        if args.part != "all" and title != args.part:
            continue
        lines = part()
        print(f"### {title}\n")
        print("\n".join(lines), "\n", flush=True)


if __name__ == "__main__":
    main()
