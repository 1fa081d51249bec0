"""benchmarks/bench_study_data.py: kinds of negatives, impossible bigrams, the one-wrong-symbol
replacement and the per-kind accuracy of the fixed learner."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_study_data import (
    KINDS,
    accuracy_by_kind,
    break_position,
    impossible_bigrams,
    kind,
    main,
    one_wrong_symbol,
    possible_bigrams,
)
from reber.grammar import get_grammar

REBER = get_grammar("reber")


def test_kinds_follow_label_letters_and_break_position():
    assert kind("BTXSE", 1) == "valid"
    assert kind("BTQXSE", 0) == "foreign"
    assert kind("BTPSE", 0) == "third"  # P cannot follow BT
    assert kind("BPTVXPVE", 0) == "later"  # X cannot follow BPTV (5th symbol)
    assert break_position("BPTVXPVE") == 5 and break_position("BTXSE") == 6


def test_possible_bigrams_are_the_grammars_twenty_and_count_only_impossible_pairs():
    possible = possible_bigrams()
    assert len(possible) == 20 and {"VX", "XP", "BS", "EB"}.isdisjoint(possible)
    assert impossible_bigrams("BTXSE", possible) == 0
    # the study's corrupted tails repeat pairs no valid string holds: VX, XP, VX, XP, VX
    assert impossible_bigrams("BPTTVXPVXPVXVE", possible) == 5


def test_one_wrong_symbol_keeps_lengths_positions_and_other_strings():
    rng = np.random.default_rng(0)
    valid = [s for s in REBER.enumerate(14) if len(s) >= 9][:60]
    later = ["BPTVXPVXPVE", "BTSXPTTVXVE", "BPVVVVVTPSE"]  # corrupted tails, broken after symbol 3
    third = ["BTPTTVXVE"]
    strings, labels = valid + later + third, np.r_[np.ones(len(valid)), np.zeros(4)].astype(int)
    out = one_wrong_symbol(strings, labels, ("later",), rng)
    assert out[: len(valid)] == valid and out[-1] == third[0]
    for before, after in zip(later, out[len(valid) : -1]):
        assert len(after) == len(before) and break_position(after) == break_position(before)
        position = break_position(after) - 1
        # one valid string of the set, changed at the break only
        assert any(v[position + 1 :] == after[position + 1 :] and v[:position] == after[:position] for v in valid)
    both = one_wrong_symbol(strings, labels, ("third", "later"), rng)
    assert both[-1] != third[0] and break_position(both[-1]) == 3 and len(both[-1]) == len(third[0])


def test_accuracy_by_kind_scores_every_kind_and_weights_them_into_all():
    rng = np.random.default_rng(1)
    valid = [s for s in REBER.enumerate(12) if len(s) >= 7]
    negatives = ["BTQQSE", "BTPSSXSE", "BPTVXPVE", "BTSSPXSE"] * 5
    strings = valid + negatives
    labels = np.r_[np.ones(len(valid)), np.zeros(len(negatives))].astype(int)
    order = rng.permutation(len(strings))
    split = (([strings[i] for i in order], labels[order]),) * 2
    scores = accuracy_by_kind(split, seed=0, epochs=1)
    assert set(scores) == {"all", *KINDS}
    counts = {k: sum(kind(s, y) == k for s, y in zip(strings, labels)) for k in KINDS}
    assert scores["all"] == pytest.approx(sum(scores[k] * counts[k] for k in KINDS) / len(strings))


@pytest.mark.parametrize("flag", ["--seeds", "--epochs"])
def test_seeds_and_epochs_must_be_positive_and_the_error_names_them(flag, capsys):
    with pytest.raises(SystemExit):
        main([flag, "0"])
    assert f"argument {flag}: must be a whole number >= 1, got '0'" in capsys.readouterr().err
