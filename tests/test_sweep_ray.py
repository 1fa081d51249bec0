"""The Ray backend on a real local Ray instance."""

from __future__ import annotations

import pytest

from graphprior.store import read_table
from graphprior.sweep import run_sweep

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_tiny_sweep_through_ray(local_ray, tmp_path):
    spec = {
        "name": "ray",
        "generators": [
            {"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": 0.3}},
            {"name": "watts_strogatz", "params": {"n": 6, "k": 3, "p": 0.3}},  # odd k: fails
        ],
        "model": {"cells": ["lstm"]},
        "tasks": [{"size": 100}],
        "train": {"epochs": 1, "batch_size": 32},
    }
    store = tmp_path / "r.db"
    summary = run_sweep(spec, store, backend="ray", progress=False)
    assert (summary.done, summary.failed) == (1, 1)
    assert local_ray.is_initialized()  # a Ray instance the caller started is left running
    table = read_table(store).set_index("k")
    assert 0 <= table.loc[2, "test_acc"] <= 1 and table.loc[2, "status"] == "done"
    assert table.loc[3, "reason"].startswith("ValueError: k must be even")
    again = run_sweep(spec, store, backend="ray", progress=False)
    assert (again.skipped, again.done, again.failed) == (2, 0, 0)
