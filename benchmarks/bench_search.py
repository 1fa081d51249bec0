"""Random search vs regularised evolution vs evolution + surrogate vs the no-surrogate
ablation, at equal budgets of trained candidates, over several search seeds.

The space is ``examples/search.toml``: Watts–Strogatz, Barabási–Albert and Erdős–Rényi
priors of 8 to 24 nodes as masked RNN/GRU/LSTM networks (orientation, self-loops and gate
layout searched too), at most ``max_weights`` recurrent weights per candidate, on Reber
classification with hard negatives. Every strategy gets ``--budget`` candidates per search
seed; the four strategies of one search seed share one results store (equal configs are
equal runs, trained once: the common random warm-up is trained once, and a candidate two
strategies both propose too), which changes no number, only the CPU time. Reported per
strategy: the best score found (mean and 95% t-interval over search seeds), the best-so-far
curve, and the best prior of each search re-trained on ``--retrain`` fresh training seeds
(a search's best is biased upwards by selection; the re-trained figure is not).

    nice -n 5 python -m benchmarks.bench_search                          # 5 seeds x 24 candidates
    nice -n 5 python -m benchmarks.bench_search --budget 40              # docs/benchmarks.md: the same, extended to 40
    nice -n 5 python -m benchmarks.bench_search --seeds 10 --budget 60   # the fuller comparison (~1 CPU-hour)

Stores and results go to ``--out`` (default ``/tmp/h16/bench``); killed, the same command
resumes from the stores, and a larger ``--budget`` extends the finished searches (a search's
first candidates do not depend on its budget when the budget is a multiple of ``batch``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from graphprior.intervals import t_interval

from graphprior.executors import SerialExecutor
from graphprior.plots import best_so_far
from graphprior.search import STRATEGIES, SearchSpace, fresh_seeds, load_search_spec, retrain, run_search

SPEC = Path(__file__).resolve().parent.parent / "examples" / "search.toml"


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (0 for one value)."""
    mean, half = t_interval(values)
    return mean, 0.0 if len(values) < 2 else half


def run(spec_path: Path, seeds: int, budget: int, retrain_seeds: int, out: Path) -> dict:
    """Every strategy x search seed; the per-strategy summary and the raw results."""
    spec = load_search_spec(spec_path)
    space = SearchSpace(spec)
    out.mkdir(parents=True, exist_ok=True)
    executor = SerialExecutor()
    raw: dict[str, list[dict]] = {name: [] for name in STRATEGIES}
    start, cpu_start = time.perf_counter(), time.process_time()
    for seed in range(seeds):
        store = out / f"seed{seed}.db"
        for name in STRATEGIES:
            result = run_search(spec, store, budget, strategy=name, seed=seed, executor=executor, progress=False)
            best = result.best
            again = retrain(space, best.genome, fresh_seeds(spec, retrain_seeds), store, executor)
            raw[name].append({"seed": seed, "best": best.score, "retrained": float(np.nanmean(again)),
                              "curve": result.best_so_far(), "genome": best.genome.describe(),
                              "weights": space.weights(best.genome), "proposed": result.proposed})
            print(f"seed {seed} {name:24s} best {best.score:.4f} re-trained {np.nanmean(again):.4f} "
                  f"({best.genome.generator}, {best.genome.cell}, {space.weights(best.genome)} weights)", flush=True)
    summary = {name: {"best": interval([r["best"] for r in rows]), "retrained": interval([r["retrained"] for r in rows]),
                      "best_at_half": interval([r["curve"][budget // 2 - 1] for r in rows])}
               for name, rows in raw.items()}
    return {"spec": str(spec_path), "seeds": seeds, "budget": budget, "retrain_seeds": retrain_seeds,
            "wall_seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
            "summary": summary, "raw": raw}


def table(results: dict) -> str:
    """The markdown table of the summary."""
    half = results["budget"] // 2
    lines = [f"| strategy | best after {half} | best after {results['budget']} | best re-trained "
             f"({results['retrain_seeds']} fresh seeds) |", "|---|---|---|---|"]
    for name, row in results["summary"].items():
        cells = [f"{row[key][0]:.3f} ± {row[key][1]:.3f}" for key in ("best_at_half", "best", "retrained")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC, help="Search spec (default: examples/search.toml).")
    parser.add_argument("--seeds", type=int, default=5, help="Search seeds per strategy.")
    parser.add_argument("--budget", type=int, default=24, help="Candidates trained per search.")
    parser.add_argument("--retrain", type=int, default=3, help="Fresh training seeds for each search's best.")
    parser.add_argument("--out", type=Path, default=Path("/tmp/h16/bench"), help="Folder for stores and results.")
    args = parser.parse_args()
    results = run(args.spec, args.seeds, args.budget, args.retrain, args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    curves = {name: [r["curve"] for r in rows] for name, rows in results["raw"].items()}
    best_so_far(curves, metric="test_acc").savefig(args.out / "best_so_far.png", dpi=120, bbox_inches="tight")
    print(table(results))
    print(f"wall {results['wall_seconds']:.0f} s, CPU {results['cpu_seconds']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
