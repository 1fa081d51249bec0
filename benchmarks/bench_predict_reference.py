"""The study's own tables: its single-split R² against repeated grouped cross-validation.

Stier, Darji & Granitzer (2021) report R² per cell type from one random 90/10 split
(``structure/r_squared.csv``). On the same 200 runs per cell type this benchmark scores
the study's three regressors and ours under repeated grouped k-fold CV (identical splits
for every model, so fold scores pair up) and prints markdown tables.

    .venv/bin/python -m benchmarks.bench_predict_reference [--quick] [--reference PATH]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from graphprior.predict import REGRESSORS, STUDY_REGRESSORS, CVResult, compare_models, load_table

CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")
HEADLINE = "ensemble"
QUICK_MODELS = (*STUDY_REGRESSORS, "log_bayesian_ridge", "extra_trees", HEADLINE, "mean")
DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "stier2021"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path,
                        default=Path(os.environ.get("GRAPHPRIOR_REFERENCE", DEFAULT_REFERENCE)),
                        help="folder of the study's data (default: $GRAPHPRIOR_REFERENCE or %(default)s)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="parallel fits (joblib n_jobs)")
    parser.add_argument("--quick", action="store_true",
                        help=f"2 repeats and only {', '.join(QUICK_MODELS)}")
    return parser.parse_args()


def _r2(result: CVResult) -> tuple[float, float]:
    r2 = result.summary()["r2"]
    return r2["mean"], r2["std"]


def _paired(ours: CVResult, theirs: CVResult) -> tuple[float, float, float]:
    """Fold-wise R² difference (same splits): mean, std and the fraction of folds won."""
    difference = ours.folds["r2"].to_numpy() - theirs.folds["r2"].to_numpy()
    return float(difference.mean()), float(difference.std(ddof=1)), float((difference > 0).mean())


def main() -> None:
    args = _arguments()
    if not args.reference.is_dir():
        raise SystemExit(f"reference data not found at {args.reference}: set GRAPHPRIOR_REFERENCE")
    models = QUICK_MODELS if args.quick else tuple(REGRESSORS)
    repeats = 2 if args.quick else args.repeats
    structure = args.reference / "structure"
    table = load_table([structure / f"{cell}.csv" for cell in CELLS])
    reported = pd.read_csv(structure / "r_squared.csv").set_index("mode")
    started = time.perf_counter()
    headline_rows, all_rows = [], {}
    for cell in CELLS:
        part = table.for_cell(cell)
        cv = {r.model: r for r in compare_models(part, models, scope=cell, n_splits=args.folds,
                                                 n_repeats=repeats, seed=args.seed, n_jobs=args.jobs)}
        single = compare_models(part, STUDY_REGRESSORS, scope=cell, protocol="study", seed=args.seed)
        study_best = max(STUDY_REGRESSORS, key=lambda m: _r2(cv[m])[0])
        ours_best = max((m for m in models if m not in STUDY_REGRESSORS), key=lambda m: _r2(cv[m])[0])
        difference, spread, won = _paired(cv[HEADLINE], cv[study_best])
        row = reported.loc[cell.upper()]
        headline_rows.append({
            "cell": cell,
            "study reported (1 split)": f"{row.max():.3f} ({row.idxmax()})",
            "study re-run (1 split)": f"{max(_r2(r)[0] for r in single):.3f}",
            "study best, grouped CV": "{:.3f} ± {:.3f} ({})".format(*_r2(cv[study_best]), study_best),
            f"{HEADLINE}, grouped CV": "{:.3f} ± {:.3f}".format(*_r2(cv[HEADLINE])),
            "our best, grouped CV": "{:.3f} ± {:.3f} ({})".format(*_r2(cv[ours_best]), ours_best),
            f"{HEADLINE} / study best": f"{_r2(cv[HEADLINE])[0] / _r2(cv[study_best])[0]:.2f}",
            f"paired ΔR² ({HEADLINE} − study best)": f"{difference:+.3f} ± {spread:.3f}, wins {won:.0%} of folds",
        })
        all_rows[cell] = {m: "{:.3f} ± {:.3f}".format(*_r2(r)) for m, r in cv.items()}
    seconds = time.perf_counter() - started
    print(f"## Study tables: single split vs {args.folds}-fold x {repeats} grouped CV "
          f"(seed {args.seed}, {seconds:.0f} s)\n")
    print(pd.DataFrame(headline_rows).to_markdown(index=False))
    print("\n## R² (mean ± std over folds) of every model, same splits\n")
    every = pd.DataFrame(all_rows).rename_axis("model").reset_index()
    print(every.to_markdown(index=False))
    beaten = np.mean([float(r[f"{HEADLINE} / study best"]) > 1 for r in headline_rows])
    print(f"\n{HEADLINE} beats the study's best regressor on {beaten:.0%} of cell types.")


if __name__ == "__main__":
    main()
