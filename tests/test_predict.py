"""graphprior.predict and graphprior.report: grouped CV, metrics, the study's split, reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import (
    balanced_accuracy_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split

from graphprior import predict as P
from graphprior.features import STUDY_FEATURES
from graphprior.report import PLOTS, build_report, to_markdown, write_report
from graphprior.store import ResultsStore, RunRecord

CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")


def synthetic_frame(n_graphs: int = 60, runs_per_graph: int = 2, seed: int = 0,
                    cells: tuple[str, ...] = ("gru",)) -> pd.DataFrame:
    """Runs whose accuracy is a known smooth function of nodes and density (plus little noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell in cells:
        for graph in range(n_graphs):
            nodes, density, diameter = rng.uniform(10, 50), rng.uniform(0.05, 0.5), rng.integers(2, 8)
            for run in range(runs_per_graph):
                accuracy = 0.5 + 0.4 * density + 0.004 * nodes + rng.normal(0, 0.005)
                rows.append({"run_id": f"{cell}-{graph}-{run}", "graph_id": f"{cell}-{graph}",
                             "cell": cell, "status": "done", "nodes": nodes, "density": density,
                             "diameter": float(diameter), "test_acc": accuracy})
    return pd.DataFrame(rows)


FEATURES = ["nodes", "density", "diameter"]


@pytest.fixture(scope="module")
def table() -> P.PredictionTable:
    return P.load_table(synthetic_frame(), features=FEATURES)


# --------------------------------------------------------------------------- splits

@settings(max_examples=25, deadline=None)
@given(
    groups=st.lists(st.integers(0, 30), min_size=12, max_size=80),
    n_splits=st.integers(2, 5),
    n_repeats=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_grouped_splits_never_leak_a_group(groups, n_splits, n_repeats, seed):
    groups = np.array(groups)
    if len(np.unique(groups)) < n_splits:
        with pytest.raises(ValueError, match="too few groups"):
            P.grouped_splits(groups, n_splits, n_repeats, seed)
        return
    splits = P.grouped_splits(groups, n_splits, n_repeats, seed)
    assert len(splits) == n_splits * n_repeats
    for repeat in range(n_repeats):
        tests = [s.test for s in splits if s.repeat == repeat]
        # each repeat's test folds partition the rows
        assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(len(groups)))
    for split in splits:
        assert not set(groups[split.train]) & set(groups[split.test])
        assert len(split.train) + len(split.test) == len(groups)


def test_grouped_splits_are_seeded_and_repeats_differ():
    groups = np.repeat(np.arange(40), 3)
    first, again = P.grouped_splits(groups, seed=3), P.grouped_splits(groups, seed=3)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(first, again))
    by_repeat = [sorted(tuple(s.test) for s in first if s.repeat == r) for r in range(5)]
    assert len({tuple(map(tuple, folds)) for folds in by_repeat}) == 5


@pytest.mark.parametrize("kwargs, message", [
    ({"n_splits": 1}, "n_splits"), ({"n_repeats": 0}, "n_repeats"), ({"n_splits": 11}, "too few groups"),
])
def test_grouped_splits_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        P.grouped_splits(np.arange(10), **kwargs)


def test_study_split_is_train_test_split_with_random_state_7():
    (split,) = P.study_split(200)
    train, test = train_test_split(np.arange(200), test_size=0.1, random_state=7)
    assert np.array_equal(split.train, train) and np.array_equal(split.test, test)
    assert len(split.test) == 20


def test_cross_validate_with_the_study_protocol_predicts_exactly_its_test_rows(table):
    result = P.cross_validate(table, "bayesian_ridge", protocol="study")
    (split,) = P.study_split(len(table.frame))
    assert np.array_equal(result.predictions["row"], split.test)
    assert len(result.folds) == 1


# --------------------------------------------------------------------------- metrics

def test_regression_metrics_by_hand_and_against_sklearn_scipy():
    y_true, y_pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0])
    metrics = P.regression_metrics(y_true, y_pred)
    assert metrics == pytest.approx({"r2": 0.8, "spearman": 1.0, "kendall": 1.0, "mae": 0.25, "rmse": 0.5})
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.normal(size=30), rng.normal(size=30)
    metrics = P.regression_metrics(y_true, y_pred)
    assert metrics["r2"] == pytest.approx(r2_score(y_true, y_pred))
    assert metrics["spearman"] == pytest.approx(stats.spearmanr(y_true, y_pred).statistic)
    assert metrics["kendall"] == pytest.approx(stats.kendalltau(y_true, y_pred).statistic)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred))
    assert metrics["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y_true, y_pred)))


def test_rank_metrics_of_constant_predictions_are_nan():
    metrics = P.regression_metrics(np.array([1.0, 2.0, 3.0]), np.full(3, 2.0))
    assert np.isnan(metrics["spearman"]) and np.isnan(metrics["kendall"])
    assert metrics["r2"] == pytest.approx(0.0)


def test_classification_metrics_against_sklearn():
    y = np.array([0, 0, 1, 1, 1, 0, 1])
    score = np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.2, 0.8])
    metrics = P.classification_metrics(y, score)
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, score >= 0.5))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, score))
    assert np.isnan(P.classification_metrics(np.ones(3, dtype=int), score[:3])["roc_auc"])


def test_summary_is_mean_and_std_over_folds(table):
    result = P.cross_validate(table, "bayesian_ridge", n_splits=4, n_repeats=2)
    assert len(result.folds) == 8
    r2 = result.summary()["r2"]
    assert r2["mean"] == pytest.approx(result.folds["r2"].mean())
    assert r2["std"] == pytest.approx(result.folds["r2"].std(ddof=1))


# --------------------------------------------------------------------------- models

def test_a_known_function_is_predicted_and_a_shuffled_target_is_not(table):
    learned = P.cross_validate(table, "bayesian_ridge", n_repeats=2)
    assert learned.summary()["r2"]["mean"] > 0.9
    shuffled = table.frame.assign(test_acc=np.random.default_rng(0).permutation(table.y))
    noise = P.cross_validate(P.PredictionTable(shuffled, table.features), "random_forest",
                             n_splits=3, n_repeats=1)
    assert noise.summary()["r2"]["mean"] < 0.1


def test_compare_shares_splits_and_scores_every_model_and_scope():
    table = P.load_table(synthetic_frame(n_graphs=20, runs_per_graph=1, cells=("gru", "lstm")),
                         features=FEATURES)
    results = P.compare(table, ["mean", "bayesian_ridge"], n_splits=3, n_repeats=1)
    assert [(r.scope, r.model) for r in results] == [
        (s, m) for s in ("gru", "lstm", P.POOLED) for m in ("mean", "bayesian_ridge")]
    assert results[0].predictions["row"].tolist() == results[1].predictions["row"].tolist()
    assert P.best_model(results, "gru") == "bayesian_ridge"
    assert "cell=gru" in results[-1].features


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # GP on 30 random rows
@pytest.mark.parametrize("name", list(P.REGRESSORS))
def test_every_registered_regressor_is_a_seeded_pipeline(name):
    X, y = np.random.default_rng(0).uniform(size=(30, 3)), np.arange(30.0)
    first = P.make_regressor(name, seed=1).fit(X, y).predict(X)
    second = P.make_regressor(name, seed=1).fit(X, y).predict(X)
    assert np.array_equal(first, second)


def test_unknown_regressor_lists_the_allowed_names(table):
    with pytest.raises(ValueError, match="allowed: bayesian_ridge, random_forest"):
        P.make_regressor("xgboost")
    with pytest.raises(ValueError, match="models: unknown"):
        P.compare(table, ["mean", "lasso"])


# --------------------------------------------------------------------------- tables and bad input

def test_store_format_keeps_done_runs_and_groups_by_graph():
    frame = synthetic_frame(n_graphs=10)
    frame.loc[0, "status"] = "failed"
    table = P.load_table(frame, features=FEATURES)
    assert len(table.frame) == len(frame) - 1
    assert table.frame["group"].nunique() == 10
    assert table.cells == ["gru"]


def test_mean_over_seeds_gives_one_row_per_graph_and_cell_with_the_mean_target():
    frame = synthetic_frame(n_graphs=8, runs_per_graph=3, cells=("gru", "lstm"))
    table = P.load_table(frame, features=FEATURES, mean_over_seeds=True)
    assert len(table.frame) == 16 and table.frame["group"].nunique() == 16
    expected = frame.groupby("graph_id")["test_acc"].mean()
    got = table.frame.set_index("group")["test_acc"]
    np.testing.assert_allclose(got.loc[expected.index].to_numpy(), expected.to_numpy())
    first = frame.groupby("graph_id")[FEATURES].first()
    pd.testing.assert_frame_equal(table.frame.set_index("group").loc[first.index, FEATURES], first,
                                  check_names=False)
    single = synthetic_frame(n_graphs=8, runs_per_graph=1)
    assert len(P.load_table(single, features=FEATURES, mean_over_seeds=True).frame) == 8


def test_noise_ceiling_is_one_minus_the_within_graph_share_of_variance():
    frame = pd.DataFrame({"graph_id": ["a", "a", "b", "b", "c"], "cell": "gru", "status": "done",
                          "density": [0.1, 0.1, 0.2, 0.2, 0.3], "test_acc": [0.5, 0.7, 0.8, 0.8, 0.9]})
    result = P.noise_ceiling(P.load_table(frame, features=["density"]))
    within = (0.1 ** 2 + 0.1 ** 2 + 0 + 0) / 2  # squared deviations from the graph means / (n - groups)
    total = np.var([0.5, 0.7, 0.8, 0.8, 0.9], ddof=1)
    assert result["ceiling"] == pytest.approx(1 - within / total)
    assert result["within_std"] == pytest.approx(np.sqrt(within)) and result["repeated_groups"] == 2
    single = P.noise_ceiling(P.load_table(frame, features=["density"], mean_over_seeds=True))
    assert np.isnan(single["ceiling"]) and single["repeated_groups"] == 0
    # pooled over cell types, runs of one graph differ by cell, which the one-hot predicts
    two_cells = pd.concat([frame, frame.assign(cell="lstm", test_acc=frame["test_acc"] - 0.3)])
    pooled = P.load_table(two_cells, features=["density"]).pooled()
    assert P.noise_ceiling(pooled)["within_std"] == pytest.approx(np.sqrt(within))
    assert P.noise_ceiling(pooled)["repeated_groups"] == 4


@pytest.mark.parametrize("seed, noise", [(0, 0.01), (1, 0.05), (2, 0.1), (3, 0.2), (4, 0.4)])
def test_noise_ceiling_estimates_the_r2_of_the_true_graph_means(seed, noise):
    # the best any predictor of structure can do is to answer each graph's true mean
    rng = np.random.default_rng(seed)
    means = np.repeat(rng.uniform(0.5, 1.0, size=300), 4)
    y = means + rng.normal(0, noise, size=1200)
    frame = pd.DataFrame({"graph_id": np.repeat(np.arange(300), 4), "cell": "gru", "status": "done",
                          "density": means, "test_acc": y})
    ceiling = P.noise_ceiling(P.load_table(frame, features=["density"]))["ceiling"]
    oracle = 1 - np.sum((y - means) ** 2) / np.sum((y - y.mean()) ** 2)
    assert ceiling == pytest.approx(oracle, abs=0.04)


def test_mean_over_seeds_refuses_features_that_differ_within_a_graph():
    frame = synthetic_frame(n_graphs=8, runs_per_graph=2)
    frame.loc[1, "density"] += 0.1  # run 1 is graph 0's second run
    with pytest.raises(ValueError, match=r"mean_over_seeds: features \['density'\] differ"):
        P.load_table(frame, features=FEATURES, mean_over_seeds=True)


def test_csv_and_parquet_load_like_the_frame(tmp_path, table):
    frame = synthetic_frame()
    frame.to_csv(tmp_path / "runs.csv", index=False)
    frame.to_parquet(tmp_path / "runs.parquet", index=False)
    frame.to_parquet(tmp_path / "runs.pq", index=False)
    for path in (tmp_path / "runs.csv", tmp_path / "runs.parquet", tmp_path / "runs.pq"):
        loaded = P.load_table(path, features=FEATURES)
        pd.testing.assert_frame_equal(loaded.frame, table.frame, check_dtype=False)


def test_results_store_loads_with_done_runs_only(tmp_path):
    frame = synthetic_frame(n_graphs=8)
    with ResultsStore(tmp_path / "runs.db") as store:
        for i, row in frame.iterrows():
            store.add(RunRecord(
                run_id=row.run_id, graph_id=row.graph_id, seed=0, status="failed" if i == 0 else "done",
                config={}, flat={"cell": row.cell}, metrics={"test_acc": row.test_acc},
                features={f: row[f] for f in FEATURES}))
    table = P.load_table(tmp_path / "runs.db", features=FEATURES)
    assert len(table.frame) == len(frame) - 1 and table.frame["group"].nunique() == 8
    assert table.y == pytest.approx(frame["test_acc"][1:].to_numpy())


@pytest.mark.parametrize("change, kwargs, message", [
    (lambda f: f.drop(columns="test_acc"), {}, "target: column 'test_acc' not in the table"),
    (lambda f: f.assign(test_acc=0.5), {}, "constant"),
    (lambda f: f.assign(density=np.where(f.index == 3, np.nan, f.density)), {}, r"NaN values in columns \['density'\]"),
    (lambda f: f, {"features": ["nodes", "girth"]}, r"features: columns \['girth'\]"),
    (lambda f: f.assign(nodes="many"), {}, "not numeric"),
    (lambda f: f.assign(status="failed"), {}, "no rows"),
])
def test_bad_tables_raise_clear_errors(change, kwargs, message):
    with pytest.raises(ValueError, match=message):
        P.load_table(change(synthetic_frame(n_graphs=10)), **{"features": FEATURES, **kwargs})


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        P.load_table(tmp_path / "missing.csv")
    (tmp_path / "runs.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type '.txt'; allowed: .csv, .parquet, .pq, .db"):
        P.load_table(tmp_path / "runs.txt")


def test_too_few_graphs_for_the_folds_is_an_error():
    table = P.load_table(synthetic_frame(n_graphs=3, runs_per_graph=4), features=FEATURES)
    with pytest.raises(ValueError, match="too few groups for n_splits=5 folds: 3 groups in 12 rows"):
        P.cross_validate(table, "mean")


def test_pooled_table_one_hot_encodes_the_cell():
    table = P.load_table(synthetic_frame(n_graphs=5, cells=("gru", "lstm")), features=FEATURES)
    pooled = table.pooled()
    assert pooled.features == (*FEATURES, "cell=gru", "cell=lstm")
    assert (pooled.frame[["cell=gru", "cell=lstm"]].sum(axis=1) == 1).all()
    assert (pooled.frame["cell=gru"] == (pooled.frame["cell"] == "gru")).all()


# --------------------------------------------------------------------------- importances, ablations, learnability

def test_permutation_importance_ranks_the_informative_feature_first(table):
    ranking = P.importances(table, "bayesian_ridge", n_splits=3, n_permutations=3)
    assert list(ranking["feature"][:2]) == ["density", "nodes"]
    assert ranking.set_index("feature").loc["diameter", "mean"] < 0.02


def test_ablation_sets_drop_duplicates_and_keep_order():
    sets = P.ablation_sets(STUDY_FEATURES)
    assert list(sets) == ["size", "study", "structure"]  # full == study: left out
    assert set(sets["size"]) == set(P.SIZE_FEATURES)
    assert len(sets["study"]) == 23 and len(sets["structure"]) == 18
    assert list(P.ablation_sets(["nodes", "spectral_radius"])) == ["size", "full", "structure"]


def test_ablations_show_what_each_feature_set_predicts(table):
    results = P.ablations(table, "bayesian_ridge", n_splits=3, n_repeats=1)
    assert list(results) == ["size", "study", "structure"]  # all three features are the study's
    r2 = {name: r.summary()["r2"]["mean"] for name, r in results.items()}
    # accuracy depends on density and nodes: either alone explains only part of it
    assert r2["study"] > 0.9 and max(r2["structure"], r2["size"]) < 0.7


def test_learnability_separates_runs_that_never_learned():
    frame = synthetic_frame(n_graphs=60, runs_per_graph=1)
    frame["test_acc"] = np.where(frame["density"] < 0.2, 0.494, frame["test_acc"])
    table = P.load_table(frame, features=FEATURES)
    result = P.learnability(table, threshold=0.5, model="bayesian_ridge", n_splits=3, n_repeats=1)
    assert result.n_failed == int((frame["density"] < 0.2).sum())
    assert result.n_learned + result.n_failed == 60
    assert result.to_dict()["classifier"]["balanced_accuracy"]["mean"] > 0.85
    assert result.regression.summary()["r2"]["mean"] > 0.8
    assert len(result.regression.predictions) == result.n_learned


# --------------------------------------------------------------------------- reports

def test_report_writes_markdown_json_and_plots(tmp_path):
    table = P.load_table(synthetic_frame(n_graphs=20, runs_per_graph=2, cells=("gru", "lstm")),
                         features=FEATURES)
    report = build_report(table, models=["mean", "bayesian_ridge"], n_splits=3, n_repeats=1,
                          n_permutations=1, study_protocol=True, learned_threshold=0.7)
    written = write_report(report, tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(["report.md", "report.json", *PLOTS])
    for name in PLOTS:
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures = json.loads((tmp_path / "out" / "report.json").read_text())
    assert figures["best_model"] == {"gru": "bayesian_ridge", "lstm": "bayesian_ridge", "pooled": "bayesian_ridge"}
    assert len(figures["comparison"]) == 6 and len(figures["study_protocol"]) == 6
    mean_baseline = figures["comparison"][0]
    assert mean_baseline["model"] == "mean" and mean_baseline["metrics"]["spearman"]["mean"] is None
    assert set(figures["learnability"]) == {"gru", "lstm", "pooled"}
    ceiling = figures["noise_ceiling"]["gru"]
    assert ceiling == P.noise_ceiling(table.for_cell("gru")) and 0.9 < ceiling["ceiling"] < 1
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert markdown == to_markdown(report) and f"Noise ceiling: R² <= {ceiling['ceiling']:.3f}" in markdown
    for heading in ("## R² by model", "### gru", "## The study's protocol", "## Permutation importances",
                    "## Feature ablations", "## Learns at all?"):
        assert heading in markdown


# --------------------------------------------------------------------------- the study's data

@pytest.mark.reference
def test_reference_tables_load_and_reproduce_the_studys_split(stier2021):
    paths = [stier2021 / "structure" / f"{cell}.csv" for cell in CELLS]
    table = P.load_table(paths)
    assert table.features == tuple(STUDY_FEATURES)
    assert table.cells == sorted(CELLS) and len(table.frame) == 800
    assert table.frame["group"].nunique() == 800  # every cell type has its own 200 graphs
    reported = pd.read_csv(stier2021 / "structure" / "r_squared.csv").set_index("mode")
    for cell in CELLS:
        single = P.cross_validate(table.for_cell(cell), "bayesian_ridge", protocol="study")
        # the study scaled before splitting; we scale on the training rows: same split, R² within 0.005
        assert single.summary()["r2"]["mean"] == pytest.approx(reported.loc[cell.upper(), "BayesianRidge"], abs=0.005)


def test_default_features_leave_out_columns_undefined_for_some_graphs():
    """Degree assortativity is NaN for regular graphs: the default feature set warns and
    leaves it out (an explicit list with it still raises, above)."""
    frame = synthetic_frame(n_graphs=10).assign(degree_assortativity=np.nan)
    frame.loc[2:, "degree_assortativity"] = 0.1
    with pytest.warns(UserWarning, match=r"leaving out \['degree_assortativity'\]"):
        table = P.load_table(frame)
    assert "degree_assortativity" not in table.features and "density" in table.features


def test_a_sweep_with_several_tasks_needs_one_chosen():
    """test_acc of classification and of next-symbol prediction are different targets."""
    frame = pd.concat([synthetic_frame(n_graphs=10).assign(task="classify"),
                       synthetic_frame(n_graphs=10, seed=1).assign(task="next_symbol",
                                                                  run_id=lambda f: f.run_id + "n")])
    with pytest.raises(ValueError, match=r"task: the table mixes tasks \['classify', 'next_symbol'\]"):
        P.load_table(frame, features=FEATURES)
    table = P.load_table(frame, features=FEATURES, task="next_symbol")
    assert len(table.frame) == 20
    with pytest.raises(ValueError, match=r"task: 'continual' is not in the table"):
        P.load_table(frame, features=FEATURES, task="continual")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=12), st.integers(2, 6), st.integers(0, 2**16))
def test_feasible_folds_leave_every_test_fold_two_runs(runs_per_graph, n_splits, seed):
    """Graphs of a single run (a few in a small store) must not leave a test fold of one row,
    whichever way the repeats shuffle them; fewer folds are chosen instead, the most that allow it."""
    groups = np.repeat(np.arange(len(runs_per_graph)), runs_per_graph)
    frame = pd.DataFrame({"group": groups, "cell": "gru", "density": 0.1, "test_acc": 0.5})
    table = P.PredictionTable(frame, ("density",), "test_acc")
    folds = P.feasible_folds(table, n_splits)
    expected = len(runs_per_graph) if min(runs_per_graph) >= 2 else len(runs_per_graph) // 2
    assert folds == min(n_splits, expected)
    if folds >= 2:
        splits = P.grouped_splits(groups, folds, n_repeats=4, seed=seed)
        assert min(len(split.test) for split in splits) >= 2


def test_feasible_folds_with_single_run_graphs_choose_fewer_folds():
    """Five graphs, one of them run once: 5 folds could put it alone in a test fold (R² NaN)."""
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4])
    table = P.PredictionTable(pd.DataFrame({"group": groups, "cell": "gru", "density": 0.1, "test_acc": 0.5}),
                              ("density",), "test_acc")
    assert P.feasible_folds(table, 5) == 2
    assert min(len(split.test) for split in P.grouped_splits(groups, 2, n_repeats=20)) >= 2
    assert min(len(split.test) for split in P.grouped_splits(groups, 5, n_repeats=1)) == 1  # what it avoids
