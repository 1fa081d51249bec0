"""Predict a network's performance from its structure alone, with honest cross-validation.

Stier, Darji & Granitzer (2021, arXiv 2107.12917) fitted three regressors to structural
features of 200 trained recurrent networks per cell type and reported R² from one random
90/10 split. This module answers the same question with numbers a reviewer would accept:
repeated k-fold cross-validation grouped by graph (runs of one graph never sit on both
sides of a split), several regressors against a mean baseline, rank metrics next to R²,
permutation importances and feature ablations (does structure predict beyond size?).

Every table is normalised (``graphprior.table.normalise``) into a :class:`PredictionTable`
with the columns ``cell``, ``group``, the feature columns and the target.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.utils.parallel import Parallel, delayed
from scipy import stats
from sklearn.base import BaseEstimator, clone
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import (
    AdaBoostRegressor,
    ExtraTreesRegressor,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    VotingRegressor,
)
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.inspection import permutation_importance
from sklearn.linear_model import BayesianRidge
from sklearn.metrics import (
    balanced_accuracy_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.model_selection import GroupKFold, train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler
from sklearn.svm import SVR

from graphprior.features import FEATURE_NAMES, STUDY_FEATURES
from graphprior.store import read_table
from graphprior.table import TABLE_SUFFIXES, normalise, read_frame

TARGET = "test_acc"
SIZE_FEATURES: tuple[str, ...] = ("layers", "nodes", "edges", "source_nodes", "sink_nodes")
METRICS: tuple[str, ...] = ("r2", "spearman", "kendall", "mae", "rmse")
CLASSIFIER_METRICS: tuple[str, ...] = ("balanced_accuracy", "roc_auc")
POOLED = "pooled"
TableSource = pd.DataFrame | str | PathLike


# --------------------------------------------------------------------------- regressors

def _bayesian_ridge(seed: int) -> Pipeline:
    return make_pipeline(MinMaxScaler(), BayesianRidge())


def _random_forest(seed: int) -> Pipeline:
    return make_pipeline(MinMaxScaler(), RandomForestRegressor(random_state=seed))


def _adaboost(seed: int) -> Pipeline:
    return make_pipeline(MinMaxScaler(), AdaBoostRegressor(random_state=seed))


def _hist_gradient_boosting(seed: int) -> Pipeline:
    # small data (hundreds of rows): shallow trees, strong shrinkage, no early stopping
    booster = HistGradientBoostingRegressor(
        learning_rate=0.05, max_iter=200, max_leaf_nodes=8, min_samples_leaf=10,
        early_stopping=False, random_state=seed,
    )
    return make_pipeline(MinMaxScaler(), booster)


def _extra_trees(seed: int) -> Pipeline:
    forest = ExtraTreesRegressor(n_estimators=200, min_samples_leaf=3, max_features=0.5,
                                 random_state=seed)
    return make_pipeline(MinMaxScaler(), forest)


def signed_log1p(X: np.ndarray) -> np.ndarray:
    """``sign(x) * log(1 + |x|)``: tames the heavy right tails of variances and counts."""
    return np.sign(X) * np.log1p(np.abs(X))


def _log_scaled(estimator: BaseEstimator) -> Pipeline:
    return make_pipeline(FunctionTransformer(signed_log1p), StandardScaler(), estimator)


def _log_bayesian_ridge(seed: int) -> Pipeline:
    return _log_scaled(BayesianRidge())


def _gaussian_process(seed: int) -> Pipeline:
    # a noise floor of 1 % of the (normalised) target variance keeps the GP from interpolating
    kernel = ConstantKernel(1.0) * RBF(5.0, length_scale_bounds=(0.5, 1e3)) + WhiteKernel(
        0.5, noise_level_bounds=(1e-2, 10.0))
    return _log_scaled(GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed))


def _ensemble(seed: int) -> Pipeline:
    # averaging a linear, a kernel and a tree model: their errors on 200 runs differ
    members = [("log_bayesian_ridge", _log_bayesian_ridge(seed)),
               ("gaussian_process", _gaussian_process(seed)),
               ("extra_trees", _extra_trees(seed))]
    return make_pipeline(VotingRegressor(members))


def _svr(seed: int) -> Pipeline:
    return make_pipeline(StandardScaler(), SVR(C=1.0, epsilon=0.01))


def _knn(seed: int) -> Pipeline:
    return make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=10, weights="distance"))


def _mean(seed: int) -> Pipeline:
    return make_pipeline(DummyRegressor(strategy="mean"))


REGRESSORS: dict[str, Callable[[int], Pipeline]] = {
    "bayesian_ridge": _bayesian_ridge,
    "random_forest": _random_forest,
    "adaboost": _adaboost,
    "hist_gradient_boosting": _hist_gradient_boosting,
    "extra_trees": _extra_trees,
    "log_bayesian_ridge": _log_bayesian_ridge,
    "gaussian_process": _gaussian_process,
    "ensemble": _ensemble,
    "svr": _svr,
    "knn": _knn,
    "mean": _mean,
}
"""Regressor factories by name: ``factory(seed) -> sklearn Pipeline``."""

STUDY_REGRESSORS: tuple[str, ...] = ("bayesian_ridge", "random_forest", "adaboost")
"""The study's three regressors: scikit-learn defaults on MinMax-scaled features."""


def make_regressor(name: str, seed: int = 0) -> Pipeline:
    """A fresh, seeded scikit-learn pipeline for the regressor called ``name``."""
    if name not in REGRESSORS:
        raise ValueError(f"unknown regressor {name!r}; allowed: {', '.join(REGRESSORS)}")
    return REGRESSORS[name](seed)


def make_classifier(seed: int = 0) -> RandomForestClassifier:
    """The seeded classifier for "does this network learn at all" (balanced class weights)."""
    return RandomForestClassifier(
        n_estimators=100, min_samples_leaf=2, class_weight="balanced", random_state=seed
    )


# --------------------------------------------------------------------------- tables

@dataclass(frozen=True)
class PredictionTable:
    """Runs to predict: ``frame`` has columns ``cell``, ``group``, ``features`` and ``target``.

    ``group`` identifies a graph: cross-validation keeps all runs of a group on one side.
    """

    frame: pd.DataFrame
    features: tuple[str, ...]
    target: str = TARGET

    @property
    def cells(self) -> list[str]:
        """The cell types present, sorted."""
        return sorted(self.frame["cell"].unique())

    @property
    def X(self) -> pd.DataFrame:  # noqa: N802 - scikit-learn naming
        """The feature matrix."""
        return self.frame[list(self.features)]

    @property
    def y(self) -> np.ndarray:
        """The target as floats."""
        return self.frame[self.target].to_numpy(dtype=float)

    @property
    def groups(self) -> np.ndarray:
        """The group (graph) of every row."""
        return self.frame["group"].to_numpy()

    def for_cell(self, cell: str) -> PredictionTable:
        """The rows of one cell type."""
        if cell not in self.cells:
            raise ValueError(f"cell {cell!r} not in the table; present: {', '.join(self.cells)}")
        rows = self.frame[self.frame["cell"] == cell].reset_index(drop=True)
        return PredictionTable(rows, self.features, self.target)

    def pooled(self) -> PredictionTable:
        """All rows, with the cell type one-hot encoded as extra features ``cell=<name>``."""
        onehot = pd.get_dummies(self.frame["cell"], prefix="cell", prefix_sep="=", dtype=float)
        if len(self.cells) < 2:
            onehot = onehot.iloc[:, :0]
        frame = pd.concat([self.frame, onehot], axis=1)
        return PredictionTable(frame, self.features + tuple(onehot.columns), self.target)

    def with_features(self, features: Sequence[str]) -> PredictionTable:
        """The same rows restricted to ``features`` (which must be columns of the frame)."""
        _check_columns(self.frame, features, "features")
        return PredictionTable(self.frame, tuple(features), self.target)

    def where(self, rows: np.ndarray | pd.Series) -> PredictionTable:
        """The rows selected by a boolean mask."""
        frame = self.frame[np.asarray(rows, dtype=bool)].reset_index(drop=True)
        return PredictionTable(frame, self.features, self.target)


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], argument: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{argument}: columns {missing} not in the table; available: {list(frame.columns)}"
        )


def read_source(source: TableSource) -> pd.DataFrame:
    """One raw table from a DataFrame, a ``.csv``/``.parquet``/``.pq`` file or a results store ``.db``."""
    if isinstance(source, pd.DataFrame):
        return source.copy()
    path = Path(source)
    if not path.exists():
        raise ValueError(f"source: file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return read_frame(path)
    if suffix in (".db", ".sqlite", ".sqlite3"):
        return read_table(path)
    raise ValueError(f"source: unsupported file type {suffix!r}; allowed: {', '.join(TABLE_SUFFIXES)}, .db")


def load_table(
    sources: TableSource | Sequence[TableSource],
    *,
    target: str = TARGET,
    features: Sequence[str] | None = None,
    task: str | None = None,
    mean_over_seeds: bool = False,
) -> PredictionTable:
    """Read and validate one or several tables into a :class:`PredictionTable`.

    ``features`` defaults to the columns named in :data:`graphprior.features.FEATURE_NAMES`.
    A sweep's table may hold several tasks, whose targets mean different things: ``task``
    keeps the runs of one (required when there are several). ``mean_over_seeds`` replaces
    the runs of one graph and cell type (its training seeds) by one row with their mean
    target. Raises ``ValueError`` for a
    missing target, a constant target, missing or non-numeric features and NaN values
    (naming the columns).
    """
    if isinstance(sources, (pd.DataFrame, str, PathLike)):
        sources = [sources]
    if not sources:
        raise ValueError("sources: give at least one table")
    frames = [normalise(read_source(s), name=f"{i}:") for i, s in enumerate(sources)]
    frame = _one_task(pd.concat(frames, ignore_index=True), task)
    if frame.empty:
        raise ValueError("sources: no rows (a results store needs runs with status 'done')")
    if target not in frame.columns:
        numeric = list(frame.select_dtypes("number").columns)
        raise ValueError(f"target: column {target!r} not in the table; numeric columns: {numeric}")
    if features is None:
        features = _default_features(frame)
    features = [f for f in features if f != target]
    _check_columns(frame, features, "features")
    non_numeric = [f for f in features if not pd.api.types.is_numeric_dtype(frame[f])]
    if non_numeric:
        raise ValueError(f"features: columns {non_numeric} are not numeric")
    if mean_over_seeds:
        frame = _mean_over_seeds(frame, features, target)
    table = PredictionTable(frame[["cell", "group", *features, target]], tuple(features), target)
    validate(table)
    return table


def _mean_over_seeds(frame: pd.DataFrame, features: Sequence[str], target: str) -> pd.DataFrame:
    """One row per (cell, graph): the graph's features and its target averaged over the
    training seeds of its runs.

    Structure fixes a network's expected performance; the training seed adds noise that no
    structural feature can predict. Averaging a graph's seeds measures how well structure
    predicts the expected performance, the question the study asks; with one run per graph
    it changes nothing. Cross-validation stays grouped by graph (one row each now).
    """
    grouped = frame.groupby(["cell", "group"], sort=False)
    varying = [f for f in features if (grouped[f].nunique(dropna=False) > 1).any()]
    if varying:
        raise ValueError(f"mean_over_seeds: features {varying} differ between runs of one graph; "
                         "only the training seed may vary within a graph")
    return grouped.agg({**{f: "first" for f in features}, target: "mean"}).reset_index()


def _one_task(frame: pd.DataFrame, task: str | None) -> pd.DataFrame:
    """The rows of ``task``; an error naming the tasks when several are mixed and none is chosen."""
    tasks = sorted(frame["task"].dropna().unique()) if "task" in frame.columns else []
    if task is None:
        if len(tasks) > 1:
            raise ValueError(f"task: the table mixes tasks {tasks}, whose targets differ; choose one")
        return frame
    if task not in tasks:
        raise ValueError(f"task: {task!r} is not in the table; tasks: {tasks}")
    return frame[frame["task"] == task]


def _default_features(frame: pd.DataFrame) -> list[str]:
    """The table's columns of ``FEATURE_NAMES``, less those undefined (NaN) for some graph.

    A feature such as degree assortativity has no value for a regular graph (a ring
    lattice, WS with p = 0); leaving the column out with a warning keeps the default run
    usable, while an explicit ``features=`` list with NaN is still an error.
    """
    features = [c for c in FEATURE_NAMES if c in frame.columns]
    if not features:
        raise ValueError("features: the table has none of graphprior.features.FEATURE_NAMES; pass features= explicitly")
    undefined = [c for c in features if frame[c].isna().any()]
    if undefined:
        warnings.warn(f"features: leaving out {undefined}, undefined (NaN) for some graphs; "
                      "pass features= to choose the columns yourself", stacklevel=3)
    return [c for c in features if c not in undefined]


def validate(table: PredictionTable) -> None:
    """Raise ``ValueError`` for NaN features or target, or a constant target."""
    nan_columns = [c for c in (*table.features, table.target) if table.frame[c].isna().any()]
    if nan_columns:
        raise ValueError(f"NaN values in columns {nan_columns}; impute or drop those rows first")
    if len(table.frame) < 2 or np.ptp(table.y) == 0:
        raise ValueError(
            f"target: {table.target!r} is constant over {len(table.frame)} rows; nothing to predict"
        )


# --------------------------------------------------------------------------- splits

class Split(NamedTuple):
    """One train/test split: row positions into the table."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray


def grouped_splits(
    groups: Sequence | np.ndarray, n_splits: int = 5, n_repeats: int = 5, seed: int = 0
) -> list[Split]:
    """Repeated grouped k-fold: each repeat shuffles the groups anew; no group straddles a split.

    Uses scikit-learn's ``GroupKFold(shuffle=True)`` with one random state per repeat.
    """
    if n_splits < 2:
        raise ValueError(f"n_splits: need at least 2 folds, got {n_splits}")
    if n_repeats < 1:
        raise ValueError(f"n_repeats: need at least 1 repeat, got {n_repeats}")
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(
            f"too few groups for n_splits={n_splits} folds: {n_groups} groups "
            f"in {len(groups)} rows; lower n_splits or add runs"
        )
    states = np.random.SeedSequence(seed).generate_state(n_repeats)
    rows = np.zeros(len(groups))
    return [
        Split(repeat, fold, train, test)
        for repeat, state in enumerate(states)
        for fold, (train, test) in enumerate(
            GroupKFold(n_splits, shuffle=True, random_state=int(state)).split(rows, groups=groups)
        )
    ]


def feasible_folds(table: PredictionTable, n_splits: int) -> int:
    """The most folds, at most ``n_splits``, that grouped k-fold can use on ``table``.

    Every test fold needs a graph of its own and two runs at least (R² of one row is
    undefined), whichever way the groups are shuffled: shuffled ``GroupKFold`` gives each
    fold ``graphs // k`` graphs or one more, so with a graph of a single run k may be at
    most ``graphs // 2`` (two graphs a fold); below 2 the table is too small to cross-validate.
    """
    runs_per_graph = table.frame["group"].value_counts()
    graphs = len(runs_per_graph)
    if graphs == 0:
        return 0
    return min(n_splits, graphs if runs_per_graph.min() >= 2 else graphs // 2)


def study_split(n_rows: int, test_size: float = 0.1, random_state: int = 7) -> list[Split]:
    """The study's protocol: one random row split, ``train_test_split(test_size=0.1, random_state=7)``.

    Rows, not graphs, are split (as the study did); with 200 rows the test set holds 20.
    """
    if n_rows * test_size < 2:
        raise ValueError(f"n_rows: {n_rows} rows leave fewer than 2 test rows at test_size={test_size}")
    train, test = train_test_split(np.arange(n_rows), test_size=test_size, random_state=random_state)
    return [Split(0, 0, train, test)]


# --------------------------------------------------------------------------- metrics

def noise_ceiling(table: PredictionTable) -> dict[str, float]:
    """How much of the target's variance any predictor of structure could explain at most.

    Runs of one graph and cell type share every feature, so the spread of the target among
    them (different training seeds) is noise that no function of structure can explain:
    the best such predictor answers each graph's mean, and its expected R² is at most
    ``ceiling = 1 - within / total``, with ``within`` the pooled variance among the runs of
    a graph and cell type and ``total`` the target's variance. Both are estimated from the
    table, so the ceiling carries sampling error (a few hundredths to a tenth with tens of
    graphs and three runs each, more where the two are close). NaN when no graph has two
    runs of one cell type. Returns ``ceiling``, ``within_std``, ``total_std`` and
    ``repeated_groups`` (graph and cell pairs with two or more runs, the ones that
    estimate the noise).
    """
    frame = table.frame
    y = frame[table.target].astype(float)
    grouped = y.groupby([frame["group"].to_numpy(), frame["cell"].to_numpy()])
    sizes = grouped.size()
    repeated = int((sizes > 1).sum())
    total = float(y.var(ddof=1)) if len(y) > 1 else math.nan
    if repeated == 0 or not total > 0:
        return {"ceiling": math.nan, "within_std": math.nan, "total_std": math.sqrt(max(total, 0.0)),
                "repeated_groups": repeated}
    squares = float(((y - grouped.transform("mean")) ** 2).sum())
    within = squares / int((sizes - 1).sum())
    return {"ceiling": 1.0 - within / total, "within_std": math.sqrt(within), "total_std": math.sqrt(total),
            "repeated_groups": repeated}


def _rank_correlation(function: Callable, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    with warnings.catch_warnings():  # constant predictions (the mean baseline): NaN
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(function(y_true, y_pred).statistic)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R², Spearman ρ, Kendall τ (NaN for constant predictions), MAE and RMSE."""
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "spearman": _rank_correlation(stats.spearmanr, y_true, y_pred),
        "kendall": _rank_correlation(stats.kendalltau, y_true, y_pred),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
    }


def classification_metrics(y_true: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Balanced accuracy (threshold 0.5 on ``score``) and ROC AUC (NaN when a fold has one class)."""
    auc = roc_auc_score(y_true, score) if len(np.unique(y_true)) == 2 else float("nan")
    with warnings.catch_warnings():  # a fold with one class: recall of that class only
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", "A single label was found")
        balanced = balanced_accuracy_score(y_true, score >= 0.5)
    return {"balanced_accuracy": float(balanced), "roc_auc": float(auc)}


def summarise(folds: pd.DataFrame, metrics: Sequence[str] = METRICS) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof=1, NaN-skipping) of each metric over folds."""
    return {m: {"mean": float(folds[m].mean()), "std": float(folds[m].std())} for m in metrics}


# --------------------------------------------------------------------------- cross-validation

@dataclass
class CVResult:
    """Cross-validated performance of one model on one table (one cell type or pooled)."""

    model: str
    scope: str
    features: tuple[str, ...]
    protocol: str
    folds: pd.DataFrame
    """One row per split: ``repeat``, ``fold`` and every metric."""
    predictions: pd.DataFrame
    """Out-of-fold predictions: ``row``, ``repeat``, ``fold``, ``actual``, ``predicted``."""

    def summary(self) -> dict[str, dict[str, float]]:
        return summarise(self.folds, [c for c in self.folds.columns if c not in ("repeat", "fold")])

    def to_dict(self) -> dict:
        """Every figure, JSON-ready."""
        return {
            "model": self.model,
            "scope": self.scope,
            "protocol": self.protocol,
            "features": list(self.features),
            "n_splits": int(len(self.folds)),
            "metrics": self.summary(),
        }


def make_splits(
    table: PredictionTable, protocol: str = "grouped", n_splits: int = 5, n_repeats: int = 5,
    seed: int = 0,
) -> list[Split]:
    """Splits for ``protocol``: ``"grouped"`` (repeated grouped k-fold) or ``"study"`` (90/10)."""
    if protocol == "grouped":
        return grouped_splits(table.groups, n_splits, n_repeats, seed)
    if protocol == "study":
        return study_split(len(table.frame))
    raise ValueError(f"protocol: {protocol!r} is not one of 'grouped', 'study'")


def _fit_predict(estimator: BaseEstimator, X: pd.DataFrame, y: np.ndarray, split: Split, proba: bool):
    fitted = clone(estimator).fit(X.iloc[split.train], y[split.train])
    test = X.iloc[split.test]
    return _positive_probability(fitted, test) if proba else fitted.predict(test)


def _positive_probability(classifier: BaseEstimator, X: pd.DataFrame) -> np.ndarray:
    """P(class True); a model trained on one class gives 1 or 0 for every row."""
    classes = list(classifier.classes_)
    if True not in classes:
        return np.zeros(len(X))
    return classifier.predict_proba(X)[:, classes.index(True)]


def _out_of_fold(
    estimator: BaseEstimator, X: pd.DataFrame, y: np.ndarray, splits: Sequence[Split],
    n_jobs: int | None, proba: bool = False,
) -> list[np.ndarray]:
    return Parallel(n_jobs=n_jobs)(
        delayed(_fit_predict)(estimator, X, y, split, proba) for split in splits
    )


def _resolve_model(model: str | BaseEstimator, seed: int) -> tuple[str, BaseEstimator]:
    if isinstance(model, str):
        return model, make_regressor(model, seed)
    return type(model).__name__, model


def cross_validate(
    table: PredictionTable,
    model: str | BaseEstimator = "random_forest",
    *,
    splits: Sequence[Split] | None = None,
    protocol: str = "grouped",
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    scope: str = "",
    n_jobs: int | None = None,
) -> CVResult:
    """Fit ``model`` (a registry name or any regressor) on each split; score the held-out rows.

    ``splits`` overrides ``protocol``/``n_splits``/``n_repeats``/``seed``.
    """
    validate(table)
    name, estimator = _resolve_model(model, seed)
    if splits is None:
        splits = make_splits(table, protocol, n_splits, n_repeats, seed)
    y = table.y
    predicted = _out_of_fold(estimator, table.X, y, splits, n_jobs)
    folds = pd.DataFrame(
        [{"repeat": s.repeat, "fold": s.fold, **regression_metrics(y[s.test], p)}
         for s, p in zip(splits, predicted)]
    )
    predictions = pd.concat(
        [pd.DataFrame({"row": s.test, "repeat": s.repeat, "fold": s.fold,
                       "actual": y[s.test], "predicted": p})
         for s, p in zip(splits, predicted)],
        ignore_index=True,
    )
    return CVResult(name, scope, table.features, protocol, folds, predictions)


def compare(
    table: PredictionTable,
    models: Sequence[str] = tuple(REGRESSORS),
    *,
    by_cell: bool = True,
    protocol: str = "grouped",
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
) -> list[CVResult]:
    """Cross-validate every model per cell type (when ``by_cell``) and on the pooled table."""
    return [
        result
        for scope, part in scopes(table, by_cell).items()
        for result in compare_models(part, models, scope=scope, protocol=protocol,
                                     n_splits=n_splits, n_repeats=n_repeats, seed=seed,
                                     n_jobs=n_jobs)
    ]


def compare_models(
    table: PredictionTable,
    models: Sequence[str] = tuple(REGRESSORS),
    *,
    scope: str = "",
    protocol: str = "grouped",
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
) -> list[CVResult]:
    """Cross-validate every model on one table; all share the same splits, so folds pair up."""
    check_models(models)
    splits = make_splits(table, protocol, n_splits, n_repeats, seed)
    return [
        cross_validate(table, m, splits=splits, protocol=protocol, seed=seed, scope=scope,
                       n_jobs=n_jobs)
        for m in models
    ]


def check_models(models: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the unknown names unless ``models`` are registry names."""
    unknown = [m for m in models if m not in REGRESSORS]
    if unknown or not models:
        raise ValueError(f"models: unknown {unknown or 'none given'}; allowed: {', '.join(REGRESSORS)}")


def scopes(table: PredictionTable, by_cell: bool = True) -> dict[str, PredictionTable]:
    """The tables to evaluate: one per cell type (when ``by_cell`` and several) and pooled."""
    cells = table.cells
    if len(cells) == 1:
        return {cells[0]: table}
    per_cell = {cell: table.for_cell(cell) for cell in cells} if by_cell else {}
    return {**per_cell, POOLED: table.pooled()}


def best_model(results: Sequence[CVResult], scope: str, metric: str = "r2") -> str:
    """The model with the highest mean ``metric`` in ``scope`` (ties: first listed)."""
    candidates = [r for r in results if r.scope == scope]
    if not candidates:
        raise ValueError(f"scope: no results for {scope!r}")
    return max(candidates, key=lambda r: r.summary()[metric]["mean"]).model


# --------------------------------------------------------------------------- importances, ablations

def importances(
    table: PredictionTable,
    model: str | BaseEstimator = "random_forest",
    *,
    n_splits: int = 5,
    n_permutations: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """Permutation importances (drop in R² when a feature is shuffled) on held-out folds.

    One grouped k-fold pass; each fold's model is scored on its own test rows, so an
    importance measures what generalises (Breiman 2001; scikit-learn ``permutation_importance``).
    Returns ``feature``, ``mean``, ``std`` (over folds and permutations), sorted by ``mean``.
    """
    validate(table)
    _, estimator = _resolve_model(model, seed)
    splits = grouped_splits(table.groups, n_splits, 1, seed)
    per_fold = Parallel(n_jobs=n_jobs)(
        delayed(_fold_importance)(estimator, table.X, table.y, s, n_permutations, seed)
        for s in splits
    )
    drops = np.concatenate(per_fold, axis=1)
    return (
        pd.DataFrame({"feature": table.features, "mean": drops.mean(axis=1), "std": drops.std(axis=1)})
        .sort_values("mean", ascending=False, ignore_index=True)
    )


def _fold_importance(
    estimator: BaseEstimator, X: pd.DataFrame, y: np.ndarray, split: Split, n_permutations: int,
    seed: int,
) -> np.ndarray:
    fitted = clone(estimator).fit(X.iloc[split.train], y[split.train])
    result = permutation_importance(
        fitted, X.iloc[split.test], y[split.test], scoring="r2", n_repeats=n_permutations,
        random_state=seed,
    )
    return result.importances


def ablation_sets(features: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Feature sets that ask whether structure predicts beyond size.

    ``size`` (nodes, edges, layers, source/sink widths), ``study`` (the study's 23),
    ``full`` (all given) and ``structure`` (full minus size). Empty or repeated sets are left out.
    """
    features = tuple(features)
    candidates = {
        "size": tuple(f for f in features if f in SIZE_FEATURES),
        "study": tuple(f for f in features if f in STUDY_FEATURES),
        "full": features,
        "structure": tuple(f for f in features if f not in SIZE_FEATURES),
    }
    sets: dict[str, tuple[str, ...]] = {}
    for name, chosen in candidates.items():
        if chosen and chosen not in sets.values():
            sets[name] = chosen
    return sets


def ablations(
    table: PredictionTable,
    model: str | BaseEstimator = "random_forest",
    *,
    feature_sets: Mapping[str, Sequence[str]] | None = None,
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
) -> dict[str, CVResult]:
    """Cross-validate ``model`` on each feature set (default :func:`ablation_sets`), same splits.

    Extra features of the table that are not structural (the pooled cell one-hots) are kept
    in every set.
    """
    structural = [f for f in table.features if not f.startswith("cell=")]
    extra = tuple(f for f in table.features if f.startswith("cell="))
    feature_sets = ablation_sets(structural) if feature_sets is None else feature_sets
    splits = grouped_splits(table.groups, n_splits, n_repeats, seed)
    return {
        name: cross_validate(table.with_features([*chosen, *extra]), model, splits=splits,
                             seed=seed, scope=name, n_jobs=n_jobs)
        for name, chosen in feature_sets.items()
    }


# --------------------------------------------------------------------------- learns at all

@dataclass
class LearnabilityResult:
    """Runs split at ``threshold``: a classifier for "learns at all", a regressor for the rest."""

    threshold: float
    n_learned: int
    n_failed: int
    classifier_folds: pd.DataFrame | None
    regression: CVResult | None

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "n_learned": self.n_learned,
            "n_failed": self.n_failed,
            "classifier": None if self.classifier_folds is None
            else summarise(self.classifier_folds, CLASSIFIER_METRICS),
            "regression_among_learned": None if self.regression is None else self.regression.to_dict(),
        }


def learnability(
    table: PredictionTable,
    threshold: float = 0.52,
    model: str | BaseEstimator = "random_forest",
    *,
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
) -> LearnabilityResult:
    """Separate runs that never learned (target <= ``threshold``, e.g. the majority-class rate).

    A classifier predicts "learns at all" under the same grouped CV (balanced accuracy, ROC AUC);
    ``model`` is cross-validated among the runs that learned. A part too small or with a
    single class is reported as ``None``.
    """
    validate(table)
    learned = table.y > threshold
    n_learned, n_failed = int(learned.sum()), int((~learned).sum())
    classifier_folds = None
    if min(n_learned, n_failed) >= n_splits:
        splits = grouped_splits(table.groups, n_splits, n_repeats, seed)
        scores = _out_of_fold(make_classifier(seed), table.X, learned, splits, n_jobs, proba=True)
        classifier_folds = pd.DataFrame(
            [{"repeat": s.repeat, "fold": s.fold, **classification_metrics(learned[s.test], p)}
             for s, p in zip(splits, scores)]
        )
    among = table.where(learned)
    regression = None
    if len(np.unique(among.groups)) >= n_splits and np.ptp(among.y) > 0:
        regression = cross_validate(among, model, n_splits=n_splits, n_repeats=n_repeats,
                                    seed=seed, scope="learned", n_jobs=n_jobs)
    return LearnabilityResult(threshold, n_learned, n_failed, classifier_folds, regression)
