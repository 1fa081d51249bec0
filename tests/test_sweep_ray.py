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
            # valid values, but this seed's one try is disconnected: fails
            {"name": "connected_watts_strogatz", "params": {"n": 6, "k": 2, "p": 0.85, "tries": 1}},
        ],
        "model": {"cells": ["lstm"]},
        "tasks": [{"size": 100}],
        "train": {"epochs": 1, "batch_size": 32},
    }
    store = tmp_path / "r.db"
    summary = run_sweep(spec, store, backend="ray", progress=False)
    assert (summary.done, summary.failed) == (1, 1)
    assert local_ray.is_initialized()  # a Ray instance the caller started is left running
    table = read_table(store).set_index("generator")
    assert 0 <= table.loc["watts_strogatz", "test_acc"] <= 1 and table.loc["watts_strogatz", "status"] == "done"
    assert table.loc["connected_watts_strogatz", "reason"].startswith("RuntimeError: no connected")
    again = run_sweep(spec, store, backend="ray", progress=False)
    assert (again.skipped, again.done, again.failed) == (2, 0, 0)
