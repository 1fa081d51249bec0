"""Prediction reports: every figure of :mod:`graphprior.predict` as markdown, JSON and PNG plots.

:func:`build_report` runs the whole analysis (model comparison per cell type and pooled,
permutation importances and feature ablations for each scope's best model, optionally the
study's single-split protocol and a separate "learns at all" analysis); :func:`write_report`
writes ``report.md``, ``report.json`` and the plots (drawn by :mod:`graphprior.plots`) into a
folder. :func:`markdown_body` and :func:`markdown_to_html` let other reports (the demo's)
nest these sections and give a browser an HTML page.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import markdown
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm import tqdm

from graphprior import plots
from graphprior.predict import (
    CLASSIFIER_METRICS,
    METRICS,
    REGRESSORS,
    CVResult,
    LearnabilityResult,
    PredictionTable,
    ablations,
    best_model,
    check_models,
    cross_validate,
    feasible_folds,
    grouped_splits,
    importances,
    learnability,
    noise_ceiling,
    scopes,
    summarise,
)

T = TypeVar("T")
PLOTS = ("predicted_vs_actual.png", "importances.png", "ablations.png")
DPI = 110


@dataclass
class Report:
    """All results of one analysis, keyed by scope (a cell type or ``pooled``)."""

    target: str
    features: tuple[str, ...]
    sizes: dict[str, dict[str, int]]
    comparison: list[CVResult]
    best: dict[str, str]
    importances: dict[str, pd.DataFrame] = field(default_factory=dict)
    ablations: dict[str, dict[str, CVResult]] = field(default_factory=dict)
    study_protocol: list[CVResult] = field(default_factory=list)
    learnability: dict[str, LearnabilityResult] = field(default_factory=dict)
    ceilings: dict[str, dict[str, float]] = field(default_factory=dict)
    folds: dict[str, int] = field(default_factory=dict)
    """The k of each scope's grouped k-fold (fewer than asked where it has few graphs)."""
    notes: list[str] = field(default_factory=list)
    """What the analysis left out or changed (skipped scopes and models, fewer folds), in words."""

    def to_dict(self) -> dict:
        """Every figure, JSON-ready (NaN becomes ``null``)."""
        return _finite({
            "target": self.target,
            "features": list(self.features),
            "sizes": self.sizes,
            "comparison": [r.to_dict() for r in self.comparison],
            "best_model": self.best,
            "importances": {s: df.to_dict(orient="records") for s, df in self.importances.items()},
            "ablations": {s: {name: r.to_dict() for name, r in sets.items()}
                          for s, sets in self.ablations.items()},
            "study_protocol": [r.to_dict() for r in self.study_protocol],
            "learnability": {s: r.to_dict() for s, r in self.learnability.items()},
            "noise_ceiling": self.ceilings,
            "folds": self.folds,
            "notes": self.notes,
        })


def _finite(value):
    """Replace NaN/inf floats by ``None`` recursively, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def build_report(
    table: PredictionTable,
    *,
    models: Sequence[str] = tuple(REGRESSORS),
    by_cell: bool = True,
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    study_protocol: bool = False,
    learned_threshold: float | None = None,
    n_permutations: int = 5,
    n_jobs: int | None = None,
    progress: bool = False,
) -> Report:
    """Run the full analysis on ``table`` (see the module docstring).

    A small table still gives a report: a scope with fewer graphs than ``n_splits`` is
    cross-validated with fewer folds, a scope too small for any (or with a constant target)
    and a model that cannot fit its folds are left out; :attr:`Report.notes` says which.
    Raises ``ValueError`` when no scope can be evaluated.
    """
    check_models(models)
    parts = scopes(table, by_cell)
    report = Report(table.target, table.features, {}, [], {})
    for scope, part in tqdm(parts.items(), desc="predict", unit="scope", disable=not progress):
        folds = _scope_folds(report, scope, part, n_splits)
        if folds is None:
            continue
        cv = dict(n_splits=folds, seed=seed, n_jobs=n_jobs)
        results = _fitted_models(report, scope, part, models, n_repeats=n_repeats, **cv)
        if not results:
            report.notes.append(f"{scope}: left out, none of the models could fit its folds")
            continue
        report.sizes[scope] = {"rows": len(part.frame), "groups": int(part.frame["group"].nunique())}
        report.folds[scope] = folds
        report.ceilings[scope] = noise_ceiling(part)
        report.comparison += results
        best = report.best[scope] = best_model(results, scope)
        report.importances[scope] = importances(part, best, n_permutations=n_permutations, **cv)
        report.ablations[scope] = ablations(part, best, n_repeats=n_repeats, **cv)
        if study_protocol:
            report.study_protocol += _attempt(
                report, f"{scope}: no study protocol", lambda: [
                    cross_validate(part, m, protocol="study", seed=seed, scope=scope, n_jobs=n_jobs)
                    for m in (r.model for r in results)]) or []
        if learned_threshold is not None:
            result = _attempt(report, f"{scope}: no 'learns at all' analysis", lambda: learnability(
                part, learned_threshold, best, n_repeats=n_repeats, **cv))
            if result is not None:
                report.learnability[scope] = result
    if not report.comparison:
        raise ValueError(f"too little to cross-validate: {'; '.join(report.notes)}")
    return report


def _scope_folds(report: Report, scope: str, part: PredictionTable, n_splits: int) -> int | None:
    """The folds ``scope`` can use, noting when they are fewer than asked; None (noted) when
    the scope cannot be cross-validated at all."""
    rows, graphs = len(part.frame), int(part.frame["group"].nunique())
    folds = feasible_folds(part, n_splits)
    if folds < 2:
        report.notes.append(f"{scope}: left out, {graphs} graph(s) in {rows} run(s); "
                            "cross-validation needs at least 2 graphs and 4 runs")
        return None
    if np.ptp(part.y) == 0:
        report.notes.append(f"{scope}: left out, {report.target} is the same for all {rows} runs")
        return None
    if folds < n_splits:
        report.notes.append(f"{scope}: {folds} folds instead of {n_splits} "
                            f"({graphs} graphs in {rows} runs)")
    return folds


def _fitted_models(
    report: Report, scope: str, part: PredictionTable, models: Sequence[str], *, n_splits: int,
    n_repeats: int, seed: int, n_jobs: int | None,
) -> list[CVResult]:
    """Cross-validate every model on the same splits; a model that cannot fit them (k-NN with
    fewer training rows than neighbours) is left out with a note."""
    splits = grouped_splits(part.groups, n_splits, n_repeats, seed)
    results = []
    for model in models:
        result = _attempt(report, f"{scope}: left out {model}", lambda: cross_validate(
            part, model, splits=splits, seed=seed, scope=scope, n_jobs=n_jobs))
        if result is not None:
            results.append(result)
    return results


def _attempt(report: Report, what: str, compute: Callable[[], T]) -> T | None:
    """``compute()``, or None with a note ``what: <reason>`` when it raises ``ValueError``
    (scikit-learn's word for data too small for a model)."""
    try:
        return compute()
    except ValueError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        report.notes.append(f"{what} ({reason})")
        return None


# --------------------------------------------------------------------------- markdown

def _cell(summary: dict[str, dict[str, float]], metric: str) -> str:
    mean, std = summary[metric]["mean"], summary[metric]["std"]
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _ceiling_lines(ceiling: dict[str, float] | None) -> list[str]:
    """The scope's noise ceiling in words, when its graphs have repeated runs."""
    if not ceiling or math.isnan(ceiling["ceiling"]):
        return []
    return [f"Noise ceiling: R² <= {ceiling['ceiling']:.3f}. Runs of one graph differ by "
            f"{ceiling['within_std']:.4f} (std, from {ceiling['repeated_groups']} graphs with "
            f"repeated runs) of the target's {ceiling['total_std']:.4f}; no function of "
            "structure can predict that part.", ""]


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [pd.DataFrame(list(rows), columns=list(header)).to_markdown(index=False), ""]


def _comparison_section(report: Report) -> list[str]:
    scope_names = list(report.sizes)
    models = list(dict.fromkeys(r.model for r in report.comparison))
    by_key = {(r.scope, r.model): r.summary() for r in report.comparison}
    lines = ["## R² by model (repeated grouped CV, mean ± std over folds)", ""]
    lines += _markdown_table(
        ["model", *scope_names],
        [[m, *(_cell(by_key[s, m], "r2") if (s, m) in by_key else "left out" for s in scope_names)]
         for m in models],
    )
    for scope in scope_names:
        size = report.sizes[scope]
        folds = report.folds.get(scope)
        lines += [f"### {scope}: {size['rows']} runs, {size['groups']} graphs"
                  f"{f', {folds} folds' if folds else ''}; best model `{report.best[scope]}`", ""]
        lines += _ceiling_lines(report.ceilings.get(scope))
        lines += _markdown_table(
            ["model", *METRICS],
            [[m, *(_cell(by_key[scope, m], k) for k in METRICS)] for m in models if (scope, m) in by_key],
        )
    return lines


def _study_section(report: Report) -> list[str]:
    if not report.study_protocol:
        return []
    cv = {(r.scope, r.model): r.summary()["r2"]["mean"] for r in report.comparison}
    rows = [[r.scope, r.model, f"{r.summary()['r2']['mean']:.3f}", f"{cv[r.scope, r.model]:.3f}"]
            for r in report.study_protocol]
    return [
        "## The study's protocol: one random 90/10 row split (random_state 7)", "",
        "One split scores a single small test set; compare with the repeated grouped CV mean.", "",
        *_markdown_table(["scope", "model", "R² single split", "R² repeated grouped CV"], rows),
    ]


def _importance_section(report: Report, top: int = 10) -> list[str]:
    lines = ["## Permutation importances (drop in held-out R², best model per scope)", ""]
    for scope, frame in report.importances.items():
        lines += [f"### {scope} (`{report.best[scope]}`)", ""]
        lines += _markdown_table(
            ["feature", "importance"],
            [[row.feature, f"{row.mean:.3f} ± {row.std:.3f}"] for row in frame.head(top).itertuples()],
        )
    return lines


def _ablation_section(report: Report) -> list[str]:
    names = list(dict.fromkeys(n for sets in report.ablations.values() for n in sets))
    rows = [
        [scope, *(_cell(sets[n].summary(), "r2") if n in sets else "" for n in names)]
        for scope, sets in report.ablations.items()
    ]
    return [
        "## Feature ablations (R², best model per scope)", "",
        "size: nodes, edges, layers, source/sink widths; study: the study's 23 features; "
        "full: all features; structure: full minus size.", "",
        *_markdown_table(["scope", *names], rows),
    ]


def _learnability_section(report: Report) -> list[str]:
    if not report.learnability:
        return []
    rows = []
    for scope, result in report.learnability.items():
        clf = (summarise(result.classifier_folds, CLASSIFIER_METRICS)
               if result.classifier_folds is not None else None)
        reg = result.regression.summary() if result.regression is not None else None
        rows.append([
            scope, str(result.n_learned), str(result.n_failed),
            _cell(clf, "balanced_accuracy") if clf else "n/a",
            _cell(clf, "roc_auc") if clf else "n/a",
            _cell(reg, "r2") if reg else "n/a",
        ])
    threshold = next(iter(report.learnability.values())).threshold
    return [
        f"## Learns at all? (learned: {report.target} > {threshold})", "",
        *_markdown_table(["scope", "learned", "failed", "balanced accuracy", "ROC AUC",
                          "R² among learned"], rows),
    ]


def _notes_section(report: Report) -> list[str]:
    if not report.notes:
        return []
    return ["## Notes", "", *(f"- {note}" for note in report.notes), ""]


def markdown_body(report: Report, heading_level: int = 2) -> list[str]:
    """The report's sections as markdown lines, their headings starting at ``heading_level``
    (so another document can nest them)."""
    lines = [
        f"{len(report.features)} features: {', '.join(report.features)}.", "",
        "Cross-validation is grouped by graph: runs of one graph never sit in both the "
        "training and the test folds.", "",
        *_notes_section(report),
        *_comparison_section(report),
        *_study_section(report),
        *_importance_section(report),
        *_ablation_section(report),
        *_learnability_section(report),
    ]
    extra = "#" * (heading_level - 2)
    return [extra + line if line.startswith("#") else line for line in lines]


def to_markdown(report: Report) -> str:
    """The report as a short markdown document."""
    lines = [
        f"# Predicting `{report.target}` from structure", "",
        *markdown_body(report),
        "## Plots", "",
        *(f"![{name[:-4]}]({name})" for name in PLOTS), "",
    ]
    return "\n".join(lines)


def report_json(report: Report) -> str:
    """Every figure of the report as standard JSON (NaN as ``null``)."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False)


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
code {{ background: #f6f6f6; padding: 0 0.2em; }}
</style></head>
<body>
{body}
</body></html>
"""


def markdown_to_html(text: str, title: str) -> str:
    """A standalone HTML page of a markdown report (tables kept; images by relative path),
    for a browser to open next to its pictures."""
    body = markdown.markdown(text, extensions=["tables"], output_format="html")
    return _HTML.format(title=html.escape(title), body=body)


# --------------------------------------------------------------------------- plots

def best_results(report: Report) -> dict[str, CVResult]:
    """Each scope's cross-validation result of its best model."""
    results = {(r.scope, r.model): r for r in report.comparison}
    return {scope: results[scope, model] for scope, model in report.best.items()}


def figures(report: Report) -> dict[str, Figure]:
    """The report's pictures by file name (:data:`PLOTS`), drawn by :mod:`graphprior.plots`."""
    ceilings = {scope: c["ceiling"] for scope, c in report.ceilings.items()}
    return {
        "predicted_vs_actual.png": plots.predicted_vs_actual(best_results(report), report.target, ceilings),
        "importances.png": plots.importances(report.importances, models=report.best),
        "ablations.png": plots.ablations(report.ablations),
    }


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.json`` and the PNG plots into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.md", out / "report.json"]
    written[0].write_text(to_markdown(report))
    written[1].write_text(report_json(report))
    for name, figure in figures(report).items():
        figure.savefig(out / name, dpi=DPI)
        written.append(out / name)
    return written
