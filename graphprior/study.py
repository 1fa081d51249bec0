"""Our sweep against the study's published results (Stier, Darji & Granitzer 2021).

Per cell type: the test-accuracy distribution of the runs in a results store next to the
study's (``structure/<cell>.csv`` of its data folder): means, medians, the share of runs
that never learned, a Mann–Whitney and a Kolmogorov–Smirnov two-sample test, overlaid
histograms; and the R² of the study's three regressors (``graphprior.predict``) on both
tables, under the study's single 90/10 split and under repeated grouped cross-validation.
The ``graphprior compare-study`` command writes it as a markdown report with PNGs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from graphprior.predict import STUDY_REGRESSORS, PredictionTable, compare_models, feasible_folds, load_table

STUDY_CELLS: tuple[str, ...] = ("rnn_tanh", "rnn_relu", "gru", "lstm")
NEVER_LEARNED = 0.55
"""A run whose test accuracy is at most this never learned: balanced binary data, so
chance is 0.5 (the study's runs that never learned sit at 0.494)."""
REFERENCE_VARIABLE = "GRAPHPRIOR_STUDY_DATA"
"""Environment variable naming the study's data folder (``dataset/``, ``structure/``)."""
ACCURACY_DECIMALS = 6
"""Decimals both samples are rounded to before a two-sample test. Accuracy over a test set
is a count ratio, and one count can be stored as two floats: a float32 mean of 3089 hits
in 6250 is 0.49423998…, the study's float64 ratio 0.49424. Unrounded, a test sees two
values where there is one; with a third of ReLU runs at chance, KS alone then gives
p ~ 1e-10 for identical counts. Six decimals keep every distinct count of a test set
under 10^6 strings apart."""
PROTOCOLS = {"study": "single 90/10 split (the study's)", "grouped": "repeated grouped 5-fold CV"}


def reference_folder(path: str | Path | None = None) -> Path:
    """The study's data folder: ``path``, else ``$GRAPHPRIOR_STUDY_DATA``; a ValueError of
    one line when neither names a folder holding ``structure/<cell>.csv``."""
    given = path if path is not None else os.environ.get(REFERENCE_VARIABLE)
    if not given:
        raise ValueError(f"reference: no folder given; pass --reference or set {REFERENCE_VARIABLE} to the "
                         "study's data folder (the one holding structure/*.csv)")
    folder = Path(given)
    missing = [c for c in STUDY_CELLS if not (folder / "structure" / f"{c}.csv").is_file()]
    if missing:
        raise ValueError(f"reference: {folder} has no structure/{missing[0]}.csv; expected the study's data "
                         f"folder (structure/{{{','.join(STUDY_CELLS)}}}.csv)")
    return folder


def study_table(folder: Path) -> PredictionTable:
    """The study's four result tables as one prediction table."""
    return load_table([folder / "structure" / f"{cell}.csv" for cell in STUDY_CELLS])


def distribution(accuracy: np.ndarray) -> dict[str, float]:
    """Size, mean, median and never-learned share of one set of test accuracies."""
    return {"n": len(accuracy), "mean": float(np.mean(accuracy)), "median": float(np.median(accuracy)),
            "never_learned": float(np.mean(accuracy <= NEVER_LEARNED))}


def comparable(accuracy: np.ndarray) -> np.ndarray:
    """Accuracies rounded to ``ACCURACY_DECIMALS``, so one count stored in float32 and in
    float64 is one value."""
    return np.round(np.asarray(accuracy, dtype=float), ACCURACY_DECIMALS)


def two_sample(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """p-values of the two-sided Mann–Whitney U and Kolmogorov–Smirnov tests, on
    accuracies made ``comparable``."""
    ours, theirs = comparable(ours), comparable(theirs)
    return {"mannwhitney_p": float(stats.mannwhitneyu(ours, theirs, alternative="two-sided").pvalue),
            "ks_p": float(stats.ks_2samp(ours, theirs).pvalue)}


def r_squared(table: PredictionTable, protocol: str, n_repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """Mean R² of each of the study's regressors on ``table`` (one cell type) under
    ``protocol``; NaN where the table is too small for it (fewer than 20 rows for the
    90/10 split, fewer than two folds of graphs for grouped CV)."""
    nan = {model: math.nan for model in STUDY_REGRESSORS}
    if protocol == "study" and len(table.frame) < 20:
        return nan
    folds = feasible_folds(table, 5)
    if protocol == "grouped" and folds < 2:
        return nan
    results = compare_models(table, STUDY_REGRESSORS, scope="", protocol=protocol, n_splits=folds,
                             n_repeats=n_repeats, seed=seed)
    return {result.model: result.summary()["r2"]["mean"] for result in results}


@dataclass(frozen=True)
class StudyComparison:
    """The comparison, one row per cell type (``cells``) and one per cell, table, protocol
    and regressor (``r2``), with the accuracies behind the histograms."""

    cells: pd.DataFrame
    r2: pd.DataFrame
    accuracies: dict[str, tuple[np.ndarray, np.ndarray]]


def compare_study(store: str | Path, reference: str | Path | None = None, n_repeats: int = 5,
                  seed: int = 0) -> StudyComparison:
    """Compare the finished runs of ``store`` with the study's tables, per cell type the
    store holds (see the module doc)."""
    folder = reference_folder(reference)
    ours, theirs = load_table(store), study_table(folder)
    cells = [c for c in STUDY_CELLS if c in ours.cells]
    if not cells:
        raise ValueError(f"store: no finished runs of the study's cell types ({', '.join(STUDY_CELLS)})")
    rows, r2_rows, accuracies = [], [], {}
    for cell in cells:
        mine, study = ours.for_cell(cell), theirs.for_cell(cell)
        accuracies[cell] = (mine.y, study.y)
        row = {"cell": cell, **{f"ours_{k}": v for k, v in distribution(mine.y).items()},
               **{f"study_{k}": v for k, v in distribution(study.y).items()}}
        rows.append({**row, **two_sample(mine.y, study.y)})
        for name, table in (("ours", mine), ("study", study)):
            for protocol in PROTOCOLS:
                for model, value in r_squared(table, protocol, n_repeats, seed).items():
                    r2_rows.append({"cell": cell, "table": name, "protocol": protocol, "model": model, "r2": value})
    return StudyComparison(pd.DataFrame(rows), pd.DataFrame(r2_rows), accuracies)


def cell_line(row: pd.Series) -> str:
    """One terminal line of a cell's comparison."""
    def side(prefix: str) -> str:
        return (f"n={int(row[f'{prefix}_n'])} mean {row[f'{prefix}_mean']:.3f} median {row[f'{prefix}_median']:.3f} "
                f"never {row[f'{prefix}_never_learned']:.0%}")

    return (f"{row.cell}: ours {side('ours')} | study {side('study')} | "
            f"Mann-Whitney p={row.mannwhitney_p:.3g}, KS p={row.ks_p:.3g}")


def plot_cell(cell: str, ours: np.ndarray, theirs: np.ndarray, path: Path) -> Path:
    """Overlaid test-accuracy histograms of one cell type (share of runs per bin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = np.linspace(min(ours.min(), theirs.min(), 0.45), 1.0, 28)
    figure, axes = plt.subplots(figsize=(6, 3.6))
    for values, label in ((theirs, f"study (n={len(theirs)})"), (ours, f"ours (n={len(ours)})")):
        axes.hist(values, bins=bins, alpha=0.55, label=label, weights=np.full(len(values), 1 / len(values)))
    axes.axvline(NEVER_LEARNED, color="grey", linestyle=":", linewidth=1)
    axes.set(title=f"{cell}: test accuracy", xlabel="test accuracy", ylabel="share of runs")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def report_markdown(comparison: StudyComparison, store: str | Path, images: dict[str, str]) -> str:
    """The markdown report: the distributions table, the R² table, the histograms."""
    cells = comparison.cells
    lines = [f"# {Path(store).name} against Stier et al. 2021", "",
             f"Never learned: test accuracy <= {NEVER_LEARNED}. Two-sided tests; p > 0.05: the "
             "distributions are not distinguishable at that level.", "",
             "| cell | ours n | ours mean | ours median | ours never | study n | study mean | study median "
             "| study never | Mann–Whitney p | KS p |", "|---|" + "---|" * 10]
    for row in cells.itertuples():
        lines.append(f"| {row.cell} | {row.ours_n} | {row.ours_mean:.3f} | {row.ours_median:.3f} | "
                     f"{row.ours_never_learned:.0%} | {row.study_n} | {row.study_mean:.3f} | "
                     f"{row.study_median:.3f} | {row.study_never_learned:.0%} | {row.mannwhitney_p:.3g} | "
                     f"{row.ks_p:.3g} |")
    lines += ["", "## R² of the study's regressors", ""]
    pivot = comparison.r2.pivot_table(index=["cell", "model"], columns=["table", "protocol"], values="r2",
                                      dropna=False)
    header = [f"{table}, {PROTOCOLS[protocol]}" for table, protocol in pivot.columns]
    lines += ["| cell | regressor | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
    for (cell, model), values in pivot.iterrows():
        lines.append(f"| {cell} | {model} | " + " | ".join("n/a" if math.isnan(v) else f"{v:.3f}" for v in values)
                     + " |")
    lines += [""] + [f"![{cell}]({image})" for cell, image in images.items()] + [""]
    return "\n".join(lines)


def write_study_report(comparison: StudyComparison, store: str | Path, output: str | Path) -> Path:
    """Write ``report.md``, ``cells.csv``, ``r2.csv`` and one histogram PNG per cell type
    into the folder ``output`` (created); return the report's path."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    images = {cell: plot_cell(cell, *values, output / f"accuracy_{cell}.png").name
              for cell, values in comparison.accuracies.items()}
    comparison.cells.to_csv(output / "cells.csv", index=False)
    comparison.r2.to_csv(output / "r2.csv", index=False)
    report = output / "report.md"
    report.write_text(report_markdown(comparison, store, images), encoding="utf-8")
    return report
