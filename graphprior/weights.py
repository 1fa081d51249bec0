"""Weights beside the results store: safetensors files named by run id, and models rebuilt.

A store ``results.db`` keeps its runs' weights in the folder ``results.db.weights/``:
``<run_id>.<stage>.safetensors`` for each kept stage (``init``: the network at
initialisation; ``rewind``: after epoch ``rewind_epoch`` of its training, for a run whose
``rewind`` control rewinds there; ``final``: after training, pruning and retraining, masks
included).
A file is written under a temporary name and renamed, so a killed run never leaves a
truncated one, and before its record is stored, so every stored run that asked for weights
has them. :func:`load_run_model` rebuilds a run's model from its stored config and loads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STAGES = ("init", "rewind", "final")
_SUFFIX = ".safetensors"


def weights_dir(store: str | Path) -> Path:
    """The folder holding the weight files of the runs of ``store``: ``<store>.weights``."""
    store = Path(store)
    return store.with_name(store.name + ".weights")


def weights_path(folder: str | Path, run_id: str, stage: str) -> Path:
    """The file of one stage of one run's weights."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return Path(folder) / f"{run_id}.{stage}{_SUFFIX}"


def save_weights(folder: str | Path, run_id: str, stages: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    """Write each stage's tensors (a state dict, or ``rnn_models.pruning.snapshot``) of run
    ``run_id`` into ``folder``, atomically; returns the files."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for stage, tensors in stages.items():
        path = weights_path(folder, run_id, stage)
        partial = path.with_name(path.name + f".{os.getpid()}.part")
        save_file({name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}, str(partial),
                  metadata={"run_id": run_id, "stage": stage})
        os.replace(partial, path)
        paths.append(path)
    return paths


def _stored_config(store: str | Path, run_id: str) -> dict[str, Any]:
    from graphprior.store import ResultsStore

    with ResultsStore(store, create=False) as results:
        for record in results.records():
            if record.run_id == run_id:
                return record.config
    raise ValueError(f"run_id {run_id!r} is not in the store {store}")


def kept_weights(store: str | Path) -> dict[str, dict[str, Path]]:
    """The weight files the store lists: per run that kept weights, its stages (the record's
    ``kept_weights`` column) and their files beside the store."""
    from graphprior.store import ResultsStore

    folder = weights_dir(store)
    with ResultsStore(store, create=False) as results:
        return {record.run_id: {stage: weights_path(folder, record.run_id, stage)
                                for stage in record.flat["kept_weights"].split()}
                for record in results.records() if record.flat.get("kept_weights")}


def load_run_model(store: str | Path, run_id: str, stage: str = "final") -> Any:
    """The model of run ``run_id`` of ``store`` with its kept weights of ``stage`` (``STAGES``):
    rebuilt from the run's stored config (graph, prior, model, a maskable readout when it
    was pruned) and loaded from ``<store>.weights/<run_id>.<stage>.safetensors``, masks
    included. Raises ValueError for an unknown run or a run whose weights were not kept."""
    from safetensors.torch import load_file

    from graphprior.prune import prunable_model, run_config_from
    from graphprior.sweep import prior_graphs, task_data

    path = weights_path(weights_dir(store), run_id, stage)
    config = run_config_from(_stored_config(store, run_id))
    if not path.exists():
        raise ValueError(f"run {run_id!r} kept no {stage} weights (no {path}): run its spec with keep_weights = true")
    graphs = prior_graphs(config)
    train, _ = task_data(config.task)
    model = prunable_model(config, graphs, train.inputs.shape[-1], train.task)
    model.load_state_dict(load_file(str(path)))  # masked modules load the masks it holds too
    return model
