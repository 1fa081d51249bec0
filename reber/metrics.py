"""Metrics for Reber tasks. Every function takes torch tensors
``(logits, targets, lengths, mask=None)`` and returns a Python float, so a training
loop can call them all the same way.

Next-symbol tasks: ``logits`` and multi-hot ``targets`` are ``(N, T, V)``; a step t of
sequence i is scored when ``t < lengths[i]`` and ``mask[i, t]`` (``mask`` defaults to
all steps; pass an ``EncodedDataset``'s ``weights`` or ``long_range`` to score a
subset). Classification: ``logits`` ``(N,)`` or ``(N, 1)``, 0/1 ``targets`` ``(N,)``;
``lengths`` and ``mask`` are accepted for the common signature and not used.

Reference: S. Hochreiter and J. Schmidhuber, "Long short-term memory", Neural
Computation 9 (1997), Sec. 5.1 (the success criterion of :func:`hs_success`).
"""

from __future__ import annotations

import math

import torch
from sklearn.metrics import roc_auc_score

__all__ = ["symbol_accuracy", "string_accuracy", "hs_success", "binary_accuracy", "roc_auc", "stream_report"]


def _scored_steps(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                  mask: torch.Tensor | None) -> torch.Tensor:
    """Bool ``(N, T)``: the steps to score. Checks the shapes of the arguments."""
    if logits.dim() != 3 or logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must both be (N, T, V), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    n, steps, _ = logits.shape
    if lengths.shape != (n,):
        raise ValueError(f"lengths must have shape ({n},), got {tuple(lengths.shape)}")
    scored = torch.arange(steps, device=logits.device).unsqueeze(0) < lengths.to(logits.device).unsqueeze(1)
    if mask is not None:
        if mask.shape != (n, steps):
            raise ValueError(f"mask must have shape ({n}, {steps}), got {tuple(mask.shape)}")
        scored &= mask.to(logits.device).bool()
    if not scored.any():
        raise ValueError("no step is scored: lengths and mask select nothing")
    return scored


def _top1_correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Bool ``(N, T)``: the most active output is an allowed next symbol."""
    return targets.gather(-1, logits.argmax(dim=-1, keepdim=True)).squeeze(-1) > 0.5


def _hs_step(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Bool ``(N, T)``: every allowed symbol's output exceeds every disallowed one's."""
    allowed = targets > 0.5
    lowest_allowed = logits.masked_fill(~allowed, float("inf")).amin(dim=-1)
    highest_other = logits.masked_fill(allowed, float("-inf")).amax(dim=-1)
    return lowest_allowed > highest_other


def _share(hits: torch.Tensor) -> float:
    """Fraction of true entries of a bool tensor as the exact count ratio in float64 (NaN
    when empty): 3089 of 6250 is 0.49424, where a float32 mean gives 0.49423998."""
    return int(hits.sum()) / hits.numel() if hits.numel() else math.nan


def _per_string(correct: torch.Tensor, scored: torch.Tensor) -> float:
    """Fraction of sequences with a scored step whose scored steps are all correct."""
    has_steps = scored.any(dim=1)
    all_ok = (correct | ~scored).all(dim=1)
    return _share(all_ok[has_steps])


def symbol_accuracy(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                    mask: torch.Tensor | None = None) -> float:
    """Fraction of scored steps whose most active output is an allowed next symbol."""
    scored = _scored_steps(logits, targets, lengths, mask)
    return _share(_top1_correct(logits, targets)[scored])


def string_accuracy(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                    mask: torch.Tensor | None = None) -> float:
    """Fraction of sequences whose most active output is allowed at every scored step."""
    scored = _scored_steps(logits, targets, lengths, mask)
    return _per_string(_top1_correct(logits, targets), scored)


def hs_success(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
               mask: torch.Tensor | None = None) -> float:
    """Fraction of sequences meeting the Hochreiter & Schmidhuber (1997) criterion: at
    every scored step the outputs of all allowed next symbols are the most active
    ones. A task is solved when this is 1.0."""
    scored = _scored_steps(logits, targets, lengths, mask)
    return _per_string(_hs_step(logits, targets), scored)


def _binary(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten ``(N,)``/``(N, 1)`` logits and check them against 0/1 targets ``(N,)``."""
    scores = logits.reshape(-1) if logits.dim() == 2 and logits.shape[1] == 1 else logits
    if scores.dim() != 1 or scores.shape != targets.shape:
        raise ValueError(
            f"logits must be (N,) or (N, 1) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if len(scores) == 0:
        raise ValueError("logits must not be empty")
    return scores.detach().float().cpu(), targets.detach().float().cpu()


def binary_accuracy(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor | None = None,
                    mask: torch.Tensor | None = None) -> float:
    """Fraction of strings classified right (valid when the logit is > 0)."""
    scores, labels = _binary(logits, targets)
    return _share((scores > 0).float() == labels)


def roc_auc(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor | None = None,
            mask: torch.Tensor | None = None) -> float:
    """Area under the ROC curve of the logits (scikit-learn's ``roc_auc_score``)."""
    scores, labels = _binary(logits, targets)
    if labels.unique().numel() < 2:
        raise ValueError("targets must contain both classes for ROC AUC")
    return float(roc_auc_score(labels.numpy(), scores.numpy()))


def stream_report(logits: torch.Tensor, targets: torch.Tensor, long_range: torch.Tensor,
                  string_starts: torch.Tensor) -> dict[str, float]:
    """The measures of Gers, Schmidhuber & Cummins (2000) for one unbroken stream:
    ``logits`` and multi-hot ``targets`` ``(L, V)`` step by step, ``long_range`` and
    ``string_starts`` bool ``(L,)``. A step is correct when every allowed next symbol's
    output exceeds every other (the criterion of :func:`hs_success`). Returns ``solved``
    (1.0 when no step is wrong), ``symbols_before_error`` and ``strings_before_error``
    (steps, and strings completed, before the first wrong step; the whole stream's when
    solved), ``symbol_accuracy`` and
    ``long_range_accuracy`` (over the T/P steps)."""
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(f"logits and targets must both be (L, V), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    steps = logits.shape[0]
    for name, mask in (("long_range", long_range), ("string_starts", string_starts)):
        if mask.shape != (steps,):
            raise ValueError(f"{name} must have shape ({steps},), got {tuple(mask.shape)}")
    correct = _hs_step(logits.unsqueeze(0), targets.unsqueeze(0)).squeeze(0)
    wrong = (~correct).nonzero()
    first = int(wrong[0]) if len(wrong) else steps
    long_range = long_range.bool()
    return {
        "solved": float(first == steps),
        "symbols_before_error": float(first),
        "strings_before_error": float(string_starts[1 : first + 1].sum()),  # strings completed before it
        "symbol_accuracy": _share(correct),
        "long_range_accuracy": _share(correct[long_range]),
    }
