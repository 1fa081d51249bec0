"""Sparsity during learning in a sweep: a run's ``[sparsity]`` setting as a training hook,
and what its record keeps.

A run whose config holds a ``sparsity`` setting (``graphprior.spec.SparsityRun``) is
trained by ``graphprior.sweep.run_one`` with the hook :func:`sparsity_hook` builds
(``rnn_models.dynamic``: ``static`` is ``DynamicSparsity``, a mask that never changes;
SET, RigL, DNW), one model at a time. :func:`sparsity_results` then adds to its record:

* metrics: ``mask_density`` (of the managed matrices' candidate connections, final),
  ``dense_gradient_entries`` and ``dense_gradient_passes`` (counted by the hook),
  ``frozen_epoch`` (0: never frozen) and ``determined_epoch`` (the first epoch whose mask
  overlaps the final one by Jaccard >= 0.9);
* history: every epoch's ``mask_jaccard_final`` and ``mask_hamming_final`` (the
  structure-emergence curve) beside what the hook records during training, and
  ``feature_<name>`` of the mask after each of the setting's ``feature_epochs`` and after
  the freeze epoch;
* features: those of the final mask (``graphprior.prune.pruned_features``: the structure of
  the trained network in the convention of every record's features, the undirected graph of
  its recurrent connections, the mean over gate blocks with ``masks = "per_gate"``), so
  ``graphprior predict`` reads them unchanged.
"""

from __future__ import annotations

import math
from typing import Any

from graphprior.spec import RunConfig

DETERMINED = 0.9
"""The Jaccard overlap with the final mask at which the structure counts as determined."""


def steps_per_epoch(config: RunConfig, train: Any) -> int:
    """Optimizer steps of one epoch: the batches of the training set."""
    return max(1, math.ceil(train.inputs.shape[0] / config.train.batch_size))


def sparsity_hook(config: RunConfig, train: Any) -> Any:
    """The ``rnn_models.dynamic`` hook of a run's sparsity setting (``config.sparsity``);
    ``end`` as a fraction is of all training steps (``epochs`` x ``steps_per_epoch``)."""
    from rnn_models.dynamic import DNW, SET, DynamicSparsity, RigL, Schedule

    setting = config.sparsity
    if setting is None:
        raise ValueError(f"run {config.run_id} has no sparsity setting")
    total = config.train.epochs * steps_per_epoch(config, train)
    end = setting.end if isinstance(setting.end, int) else max(1, round(setting.end * total))
    frozen = isinstance(setting.freeze, int)
    options = {"allocation": setting.allocation, "shared_gates": setting.masks == "shared",
               "weights": setting.weights, "confine": setting.prior == "confine", "seed": config.seed,
               "freeze_epoch": setting.freeze if frozen else None,
               "freeze_jaccard": None if frozen else setting.freeze}
    schedule = Schedule(update_every=setting.update_every, drop_fraction=setting.drop_fraction, end_step=end)
    if setting.method == "set":
        return SET(setting.density, schedule, **options)
    if setting.method == "rigl":
        return RigL(setting.density, schedule, **options)
    if setting.method == "dnw":
        return DNW(setting.density, **options)
    return DynamicSparsity(setting.density, **options)


Results = tuple[dict[str, float], list[dict[str, float]], dict[str, float]]
"""(extra metrics, per-epoch history, features) of a sparsity run."""


def sparsity_results(config: RunConfig, model: Any, hook: Any, epochs: list[dict[str, float]]) -> Results:
    """(extra metrics, history with the emergence curve and epoch features, features of the
    final mask) of a trained sparsity run (see the module doc)."""
    from graphprior.prune import pruned_features

    per_gate = config.sparsity.masks == "per_gate"
    overlaps = hook.overlap_with_final()
    history = [dict(row) for row in epochs]
    for row, overlap in zip(history, overlaps):
        row["mask_jaccard_final"], row["mask_hamming_final"] = overlap["jaccard"], overlap["hamming"]
    chosen = set(config.sparsity.feature_epochs) | ({hook.frozen_epoch} if hook.frozen_epoch else set())
    for epoch in sorted(e for e in chosen if e <= min(len(history), len(hook.epoch_masks))):
        copy = hook.masked_copy(model, hook.epoch_masks[epoch - 1])
        history[epoch - 1].update({f"feature_{name}": value for name, value in pruned_features(copy, per_gate).items()})
    final = hook.mask_vector()
    metrics = {"mask_density": float(final.float().mean()) if final.numel() else 0.0,
               "dense_gradient_entries": float(hook.dense_gradient_entries),
               "dense_gradient_passes": float(hook.dense_gradient_passes),
               "frozen_epoch": float(hook.frozen_epoch or 0),
               "determined_epoch": float(hook.determined_epoch(DETERMINED) or 0)}
    return metrics, history, pruned_features(model, per_gate)
