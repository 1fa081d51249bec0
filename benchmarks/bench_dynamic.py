"""Sparsity during learning on embedded-Reber next-symbol prediction: dense, a static random
mask, Watts-Strogatz and Barabasi-Albert priors, SET, RigL, DNW and early-frozen RigL and DNW
at equal density, what they cost and when their structure emerges.

For each seed and sparsity (80 %, 90 % of the recurrent connections, one mask shared by the
gates) a masked LSTM (H=60) is trained through ``fit`` with the algorithm's hook
(``rnn_models.dynamic``, managing ``weight_hh``). The priors are fixed masks of a WS graph
(k nearest the density: exact at H=60) and a BA graph (m whose ``m (n - m)`` edges come
nearest), kept by ``DynamicSparsity(None)``. Reported: the density reached, final test
accuracy (fit's ``test_acc``) and the share of test strings solved at every step
(``reber.metrics.hs_success``), wall and CPU seconds of training (mean and 95 % t-interval over
seeds), the mean dense-gradient entries each algorithm used (counted by the hooks) and the
epoch at which its mask overlaps the final one by Jaccard >= 0.9 (``determined_epoch``); then
each method's wall and CPU time against static sparse training (medians of per-seed ratios;
CPU time stays meaningful on a busy machine), and the
structure-emergence curves (Jaccard overlap with the final mask per epoch) as PNGs
(``graphprior.plots.structure_emergence``).

    nice -n 5 python -m benchmarks.bench_dynamic              # 5 seeds, 30 epochs
    nice -n 5 python -m benchmarks.bench_dynamic --seeds 10 --plots docs/bench
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.bench_pruning import mean_ci
from graphprior.generators import generate
from graphprior.plots import structure_emergence
from graphprior.priors import recurrent_mask
from reber.metrics import hs_success
from reber.tasks import next_symbol_data
from rnn_models.config import TrainConfig
from rnn_models.dynamic import DNW, SET, DynamicSparsity, RigL, Schedule
from rnn_models.masked import make_rnn
from rnn_models.train import NextSymbolModel, fit

LEVELS = (0.8, 0.9)
PRIORS = ("WS prior", "BA prior")
METHODS = ("static", *PRIORS, "SET", "RigL", "DNW", "RigL frozen", "DNW frozen")
DYNAMIC = ("SET", "RigL", "DNW", "RigL frozen", "DNW frozen")


def hook(method: str, density: float, schedule: Schedule, freeze: int, seed: int) -> DynamicSparsity:
    """The hook of ``method`` at ``density`` (``"static"``: a random mask that never changes;
    a prior: the model's mask, kept)."""
    options = {"weights": "hh", "seed": seed}
    if method in PRIORS:
        return DynamicSparsity(None, **options)
    if method == "static":
        return DynamicSparsity(density, **options)
    if method == "SET":
        return SET(density, schedule, **options)
    if method.startswith("RigL"):
        return RigL(density, schedule, freeze_epoch=freeze if "frozen" in method else None, **options)
    return DNW(density, freeze_epoch=freeze if "frozen" in method else None, **options)


def prior_mask(method: str, density: float, hidden: int, seed: int) -> torch.Tensor:
    """The recurrent mask of a WS graph (even k nearest ``density * hidden``) or a BA graph
    (the m whose ``m (hidden - m)`` edges give the density nearest ``density``)."""
    if method == "WS prior":
        k = 2 * max(1, round(density * hidden / 2))
        return recurrent_mask(generate("watts_strogatz", n=hidden, k=k, p=0.2, seed=seed))
    m = min(range(1, hidden), key=lambda m: abs(2 * m * (hidden - m) / hidden**2 - density))
    return recurrent_mask(generate("barabasi_albert", n=hidden, m=m, seed=seed))


def run(method: str, density: float | None, seed: int, data: tuple, config: TrainConfig, hidden: int,
        freeze: int) -> dict:
    """Train one model; its accuracy, wall and CPU seconds, dense-gradient entries, density,
    90 %-determined epoch and emergence curve."""
    train, test = data
    vocab = train.inputs.shape[-1]
    mask = prior_mask(method, density, hidden, seed) if method in PRIORS else None
    torch.manual_seed(seed)
    model = NextSymbolModel(make_rnn("lstm", vocab, hidden, batch_first=True, hh_mask=mask), vocab)
    steps = config.epochs * -(-train.inputs.shape[0] // config.batch_size)
    schedule = Schedule(update_every=max(1, steps // 40), drop_fraction=0.3, end_step=max(2, int(0.75 * steps)))
    hooks = [] if density is None else [hook(method, density, schedule, freeze, seed)]
    wall, cpu = time.perf_counter(), time.process_time()
    history = fit(model, train, test, config, metrics={"hs_success": hs_success}, hooks=hooks)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sparse = hooks[0] if hooks else None
    return {"acc": history.final["test_acc"], "hs": history.final["hs_success"], "wall": wall, "cpu": cpu,
            "dense_grad": float(sparse.dense_gradient_entries) if sparse else 0.0,
            "density": history.final["mask_density"] if sparse else 1.0,
            "determined": float(sparse.determined_epoch(0.9)) if sparse else 1.0,
            "curve": [o["jaccard"] for o in sparse.overlap_with_final()] if sparse else []}


def measure(seeds: int, epochs: int, hidden: int, n_train: int, freeze: int) -> dict:
    """Results per (method, sparsity) and seed, methods interleaved within each seed."""
    data = next_symbol_data("embedded", n_train=n_train, n_test=256, seed=0)
    results: dict = {}
    run("dense", None, 0, data, TrainConfig(epochs=1), hidden, freeze)  # warm-up: the first run pays oneDNN's setup
    for seed in range(seeds):
        config = TrainConfig(lr=1e-2, batch_size=16, epochs=epochs, seed=seed)
        results.setdefault(("dense", 0.0), []).append(run("dense", None, seed, data, config, hidden, freeze))
        for level in LEVELS:
            for method in METHODS:
                results.setdefault((method, level), []).append(
                    run(method, 1.0 - level, seed, data, config, hidden, freeze))
    return results


def report(results: dict) -> None:
    """The markdown tables of docs/bench/dynamic.md."""
    print("| method | sparsity | density | test accuracy | strings solved | wall s | CPU s | dense-gradient entries "
          "| 90 % determined (epoch) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (method, level), rows in results.items():
        acc, hs, wall, cpu = (mean_ci([r[key] for r in rows]) for key in ("acc", "hs", "wall", "cpu"))
        dense, density = (statistics.mean(r[key] for r in rows) for key in ("dense_grad", "density"))
        epochs = [int(r["determined"]) for r in rows]
        determined = f"{statistics.mean(epochs):.1f} ({min(epochs)}-{max(epochs)})" if method in DYNAMIC else "-"
        print(f"| {method} | {level:.0%} | {density:.3f} | {acc[0]:.3f} ± {acc[1]:.3f} | {hs[0]:.3f} ± {hs[1]:.3f} | "
              f"{wall[0]:.2f} ± {wall[1]:.2f} | {cpu[0]:.2f} ± {cpu[1]:.2f} | {dense:.3g} | {determined} |")
    print("\n| method | sparsity | wall time / static sparse | CPU time / static sparse |")
    print("|---|---|---|---|")
    for level in LEVELS:
        for method in METHODS[1:]:
            wall, cpu = (statistics.median(r[key] / s[key] for r, s in zip(results[method, level],
                                                                           results["static", level]))
                         for key in ("wall", "cpu"))
            print(f"| {method} | {level:.0%} | {wall:.3f} | {cpu:.3f} |")


def plot(results: dict, folder: Path) -> list[Path]:
    """One structure-emergence PNG per sparsity level (the dynamic methods' curves)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for level in LEVELS:
        path = folder / f"dynamic_emergence_{round(100 * level)}.png"
        figure = structure_emergence({m: [r["curve"] for r in results[m, level]] for m in DYNAMIC}, path=str(path))
        figure.axes[0].set_title(f"structure emergence at {level:.0%} sparsity")
        figure.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=60)
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--freeze", type=int, default=2, help="epoch after which frozen RigL/DNW fix their mask")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plots", type=Path, help="folder for the structure-emergence PNGs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.process_time()
    results = measure(args.seeds, args.epochs, args.hidden, args.n_train, args.freeze)
    print(f"embedded Reber next symbol, LSTM H={args.hidden}, {args.n_train} training strings, {args.epochs} epochs, "
          f"{args.seeds} seeds, {args.threads} thread(s); mean ± 95 % t-interval; "
          f"{time.process_time() - start:.0f} CPU s in all\n")
    report(results)
    if args.plots is not None:
        for path in plot(results, args.plots):
            print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
