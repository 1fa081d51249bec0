"""Metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, roc_auc_score

from reber.metrics import binary_accuracy, hs_success, roc_auc, string_accuracy, symbol_accuracy

# Two sequences, 3 steps, 3 symbols; sequence 1 has length 2 (its step 2 is padding).
TARGETS = torch.tensor([
    [[1, 1, 0], [0, 0, 1], [1, 0, 0]],
    [[0, 1, 0], [1, 0, 1], [0, 0, 0]],
], dtype=torch.float32)
LOGITS = torch.tensor([
    [[2.0, 1.0, 0.0], [0.0, 0.5, 1.0], [0.1, 0.9, 0.0]],    # step 0: top-1 ok, H&S ok; step 2: both fail
    [[0.0, 3.0, 1.0], [2.0, 5.0, 1.0], [9.0, 9.0, 9.0]],    # step 1: top-1 wrong; step 2 is padding
])
LENGTHS = torch.tensor([3, 2])


def test_symbol_and_string_accuracy_by_hand():
    # scored steps: seq 0 -> ok, ok, wrong; seq 1 -> ok, wrong  => 3 of 5
    assert symbol_accuracy(LOGITS, TARGETS, LENGTHS) == 3 / 5
    assert string_accuracy(LOGITS, TARGETS, LENGTHS) == 0.0
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert symbol_accuracy(LOGITS, TARGETS, LENGTHS, mask) == 1.0
    assert string_accuracy(LOGITS, TARGETS, LENGTHS, mask) == 1.0


def test_hs_success_needs_every_allowed_output_above_every_other():
    # seq 0, step 0: allowed {0, 1} = {2.0, 1.0} > {0.0}: ok. Step 1: {1.0} > {0.0, 0.5}: ok.
    # seq 1, step 1: allowed {0, 2} = {2.0, 1.0}, but 5.0 is disallowed: fails.
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert hs_success(LOGITS, TARGETS, LENGTHS, mask) == pytest.approx(0.5)
    # top-1 right but H&S wrong: allowed {0, 1} with outputs {3, 0} and disallowed 1.
    logits = torch.tensor([[[3.0, 0.0, 1.0]]])
    targets = torch.tensor([[[1.0, 1.0, 0.0]]])
    assert symbol_accuracy(logits, targets, torch.tensor([1])) == 1.0
    assert hs_success(logits, targets, torch.tensor([1])) == 0.0
    assert hs_success(torch.tensor([[[3.0, 2.0, 1.0]]]), targets, torch.tensor([1])) == 1.0


def test_padding_is_never_scored():
    noisy = LOGITS.clone()
    noisy[1, 2] = torch.tensor([-5.0, 7.0, 3.0])
    for metric in (symbol_accuracy, string_accuracy, hs_success):
        assert metric(noisy, TARGETS, LENGTHS) == metric(LOGITS, TARGETS, LENGTHS)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40))
def test_binary_metrics_agree_with_scikit_learn(seed, n):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + labels
    logits, targets = torch.tensor(scores), torch.tensor(labels, dtype=torch.float32)
    assert binary_accuracy(logits, targets) == accuracy_score(labels, scores > 0)  # the exact ratio, not float32
    assert roc_auc(logits.unsqueeze(1), targets, torch.ones(n)) == pytest.approx(roc_auc_score(labels, scores))


def test_binary_metrics_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, -0.2])
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert binary_accuracy(logits, targets) == 0.5
    # positives {2.0, -0.2} vs negatives {-1.0, 0.5}: 3 of 4 pairs ranked right
    assert roc_auc(logits, targets) == 0.75


def test_metric_errors():
    with pytest.raises(ValueError, match="logits and targets must both be"):
        symbol_accuracy(LOGITS[..., :2], TARGETS, LENGTHS)
    with pytest.raises(ValueError, match="lengths must have shape"):
        hs_success(LOGITS, TARGETS, torch.tensor([3]))
    with pytest.raises(ValueError, match="mask must have shape"):
        string_accuracy(LOGITS, TARGETS, LENGTHS, torch.ones(2, 2))
    with pytest.raises(ValueError, match="no step is scored"):
        symbol_accuracy(LOGITS, TARGETS, LENGTHS, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="logits must be"):
        binary_accuracy(torch.ones(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(torch.ones(3), torch.ones(3))
