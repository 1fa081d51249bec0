"""benchmarks/bench_study_bugs.py --compare: two sweeps paired by graph draw, cell and seed."""

from __future__ import annotations

import pytest

from benchmarks.bench_study_bugs import compare_stores
from graphprior.store import ResultsStore

from test_store import record


def _store(path, accuracy, ids, failed=()):
    """Runs of two cells over 6 graph draws; run ids differ between stores, configs match."""
    with ResultsStore(path) as store:
        for i in ids:
            cell = "gru" if i % 2 else "rnn_tanh"
            config = {"generator": "barabasi_albert", "params": {"n": 10 + i}, "graph_seed": i, "cell": cell,
                      "seed": 0}
            status = "failed" if i in failed else "done"
            store.add(record(i, status=status, run_id=f"{path.stem}{i}", config=config,
                             metrics={"test_acc": accuracy(i, cell)} if status == "done" else {}))
    return path


def test_compare_pairs_runs_of_one_draw_and_measures_the_difference(tmp_path):
    correct = _store(tmp_path / "correct.db", lambda i, cell: 0.9 + i / 100, range(6))
    bug = _store(tmp_path / "bug.db", lambda i, cell: (0.9 + i / 100) - (0.4 if cell == "rnn_tanh" else 0.02),
                 range(7), failed={5})  # draw 6 has no partner; draw 5 failed
    table = compare_stores(str(bug), str(correct)).set_index("cell")
    assert table.loc["rnn_tanh", "pairs"] == 3 and table.loc["gru", "pairs"] == 2
    assert table.loc["rnn_tanh", "difference"] == pytest.approx(-0.4)
    assert table.loc["gru", "difference"] == pytest.approx(-0.02)
    assert table.loc["gru", "ci_high"] - table.loc["gru", "ci_low"] == pytest.approx(0.0, abs=1e-9)
    assert table.loc["rnn_tanh", "never_bug"] == 1.0 and table.loc["rnn_tanh", "never_correct"] == 0.0
    assert table.loc["gru", "correct"] == pytest.approx((0.91 + 0.93) / 2)
