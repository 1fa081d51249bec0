"""Tasks: classification data and negatives, next-symbol and continual data, encoding,
bucketed batching, the study's CSV format."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reber.grammar import EMBEDDED_REBER, REBER
from reber.tasks import (
    LengthBucketSampler,
    classification_data,
    classification_strings,
    classification_vocabulary,
    collate_trimmed,
    continual_data,
    encode_classification,
    encode_next_symbol,
    hard_negatives,
    load_classification_csv,
    next_symbol_data,
    paper_negatives,
    read_csv,
    write_csv,
)

FAST = settings(max_examples=15, deadline=None)


@pytest.fixture(scope="module")
def paper_split():
    return classification_data(n=400, negatives="paper", seed=0)


def _check_encoding(data):
    """One-hot rows and indices agree with the strings; zero / -1 after each end."""
    steps = data.inputs.shape[1]
    real = torch.arange(steps)[None, :] < data.lengths[:, None]
    assert data.inputs.shape == (len(data), steps, len(data.vocabulary)) and data.inputs.dtype == torch.float32
    assert torch.equal(data.inputs.sum(-1), real.float())
    assert torch.equal(data.indices == -1, ~real)
    assert torch.equal(data.inputs.argmax(-1)[real], data.indices[real])
    assert int(data.lengths.max()) == steps


def test_classification_is_balanced_disjoint_and_labelled_right(paper_split):
    train, test = paper_split
    assert (len(train), len(test)) == (300, 100)
    for part in (train, test):
        assert part.task == "classify" and part.targets.shape == (len(part),)
        assert part.targets.mean().item() == 0.5
        assert len(set(part.strings)) == len(part)
        assert [REBER.is_valid(s) for s in part.strings] == part.targets.bool().tolist()
        _check_encoding(part)
    assert not set(train.strings) & set(test.strings)
    assert train.vocabulary == test.vocabulary == classification_vocabulary("reber")


def test_classification_vocabulary_is_alphabet_then_other_letters():
    vocabulary = classification_vocabulary("reber")
    assert vocabulary[:7] == REBER.alphabet and len(vocabulary) == 26
    assert vocabulary[7:10] == ("A", "C", "D") and vocabulary[-1] == "Z"


def test_classification_is_reproducible():
    a, _ = classification_data(n=40, negatives="hard", seed=3)
    b, _ = classification_data(n=40, negatives="hard", seed=3)
    assert a.strings == b.strings and torch.equal(a.inputs, b.inputs)


@FAST
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["paper", "hard"]),
       grammar=st.sampled_from(["reber", "embedded"]))
def test_every_negative_is_invalid(seed, kind, grammar):
    train, test = classification_data(n=60, negatives=kind, grammar=grammar, seed=seed)
    g = REBER if grammar == "reber" else EMBEDDED_REBER
    for part in (train, test):
        negatives = [s for s, y in zip(part.strings, part.targets) if y == 0]
        assert negatives and not any(g.is_valid(s) for s in negatives)


def test_length_never_gives_the_class_away_with_hard_negatives():
    """Insertions and deletions at the window's edge would make every string of length 10
    or 36 a negative: hard negatives stay inside the positives' length window."""
    train, test = classification_data(n=1000, negatives="hard", seed=5, min_length=11, max_length=35)
    for part in (train, test):
        lengths = {int(y): [len(s) for s, t in zip(part.strings, part.targets) if t == y] for y in (0, 1)}
        assert 11 <= min(lengths[0]) and max(lengths[0]) <= 35
        assert 11 <= min(lengths[1]) and max(lengths[1]) <= 35


def test_hard_negatives_are_one_edit_within_the_alphabet():
    rng = np.random.default_rng(0)
    bases = REBER.sample(300, seed=1, min_length=11, max_length=20, lengths="uniform")
    for base, negative in zip(bases, hard_negatives(bases, "reber", rng)):
        assert set(negative) <= set(REBER.alphabet) and not REBER.is_valid(negative)
        assert abs(len(negative) - len(base)) <= 1
        if len(negative) == len(base):  # substitution or transposition
            differ = [i for i in range(len(base)) if base[i] != negative[i]]
            assert len(differ) == 1 or (len(differ) == 2 and differ[1] == differ[0] + 1
                                        and sorted(base[differ[0]:differ[1] + 1]) == sorted(negative[differ[0]:differ[1] + 1]))


def _break_position(s: str) -> int:
    return next(t for t in range(len(s) + 1) if not REBER.next_symbols(s[:t]) or s[t] not in REBER.next_symbols(s[:t]))


def _paper_mix(strings):
    foreign = [s for s in strings if set(s) - set(REBER.alphabet)]
    inside = [s for s in strings if not set(s) - set(REBER.alphabet)]
    third = sum(_break_position(s) == 2 for s in inside)
    return len(foreign) / len(strings), third / len(strings)


def test_paper_negatives_mimic_the_study_mix():
    bases = REBER.sample(2000, seed=0, min_length=11, max_length=35, lengths="uniform")
    negatives = paper_negatives(bases, "reber", np.random.default_rng(0))
    assert all(s[0] == "B" and s[-1] == "E" and not REBER.is_valid(s) for s in negatives)
    foreign, third = _paper_mix(negatives)
    assert foreign == pytest.approx(0.56, abs=0.04) and third == pytest.approx(0.28, abs=0.04)


@pytest.mark.reference
def test_is_valid_labels_the_study_dataset_exactly(stier2021):
    strings, labels = [], []
    for name in ("train_data.csv", "test_data.csv"):
        s, y = read_csv(stier2021 / "dataset" / name)
        strings += s
        labels += y.tolist()
    assert len(strings) == 25_000
    assert [int(REBER.is_valid(s)) for s in strings] == labels
    # the study's negatives: 56 % foreign letters, 28 % broken at the third symbol
    foreign, third = _paper_mix([s for s, y in zip(strings, labels) if y == 0])
    assert (foreign, third) == (0.56, 0.28)


@pytest.mark.reference
def test_study_csv_loads_into_the_classification_encoding(stier2021):
    data = load_classification_csv(stier2021 / "dataset" / "test_data.csv")
    assert len(data) == 6250 and data.vocabulary == classification_vocabulary("reber")
    _check_encoding(data)


def test_csv_round_trip_in_the_study_format(tmp_path, paper_split):
    train, _ = paper_split
    path = tmp_path / "data.csv"
    write_csv(path, train.strings, train.targets.long().numpy())
    assert path.read_text().splitlines()[:2] == [",string,valid", f"0,{train.strings[0]},{int(train.targets[0])}"]
    strings, labels = read_csv(path)
    assert strings == train.strings and labels.tolist() == train.targets.long().tolist()
    assert torch.equal(load_classification_csv(path).inputs, train.inputs)


def test_csv_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(",text,valid\n0,BTXSE,1\n")
    with pytest.raises(ValueError, match="missing column"):
        read_csv(path)
    path.write_text(",string,valid\n0,BTXSE,2\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 2: valid must be 0 or 1, got .2."):
        read_csv(path)
    with pytest.raises(ValueError, match=r"symbols \['a'\] outside the vocabulary"):
        encode_classification(["BaE"], [0], classification_vocabulary())


def test_next_symbol_data_follows_hochreiter_schmidhuber():
    train, test = next_symbol_data(grammar="embedded", n_train=256, n_test=256, seed=0)
    assert (len(train), len(test)) == (256, 256)
    assert not set(train.strings) & set(test.strings)
    assert train.task == "next_symbol" and train.vocabulary == EMBEDDED_REBER.alphabet
    for part in (train, test):
        _check_encoding(part)
        assert part.lengths.tolist() == [len(s) - 1 for s in part.strings]
        assert torch.equal(part.weights, (part.inputs.sum(-1) > 0).float())
        assert part.long_range is None
    s = train.strings[0]
    for t in range(len(s) - 1):
        allowed = {a for a, m in zip(train.vocabulary, train.targets[0, t]) if m}
        assert allowed == EMBEDDED_REBER.next_symbols(s[: t + 1])
    assert train.targets[0, len(s) - 1 :].sum() == 0
    with pytest.raises(ValueError, match="valid strings"):
        encode_next_symbol(["BTE"], "reber")


def _mean_length(strings, labels=None, label=1):
    return np.mean([len(s) for i, s in enumerate(strings) if labels is None or labels[i] == label])


@pytest.mark.parametrize("lengths", ["uniform", "study"])
def test_the_classification_split_is_a_random_partition_of_lengths_and_kinds(lengths):
    # distinct draws come out short strings first: a split in draw order gave the test
    # split valid strings 1.6 (uniform) and 4.3 (study) symbols shorter than training's
    (train, y_train), (test, y_test) = classification_strings(8000, "paper", seed=0, lengths=lengths)
    for label in (1, 0):
        assert abs(_mean_length(train, y_train, label) - _mean_length(test, y_test, label)) < 0.5


def test_next_symbol_train_and_test_strings_are_a_random_partition():
    # in draw order, the test strings (those the training set left) were 3.3 symbols longer
    train, test = next_symbol_data(grammar="embedded", n_train=1000, n_test=1000, seed=0)
    assert abs(_mean_length(train.strings) - _mean_length(test.strings)) < 0.5


def test_continual_data_windows_and_long_range_marks():
    train, test = continual_data(n_train=8, n_test=4, window=60, seed=0)
    assert train.inputs.shape == (8, 60, 7) and test.inputs.shape == (4, 60, 7)
    assert train.strings != test.strings[: len(train.strings)]
    stream = "".join(train.strings)
    for i, window in enumerate(train.strings):
        first = re.search("B[TP]B", window).start()  # the first embedded string starting inside
        assert train.weights[i, :first].sum() == 0 and train.weights[i, first:].eq(1).all()
        for t in torch.nonzero(train.long_range[i]).flatten().tolist():
            # after the inner string's E, the only allowed symbol is the long-range T or P
            allowed = [a for a, m in zip(train.vocabulary, train.targets[i, t]) if m]
            assert window[t] == "E" and allowed in (["T"], ["P"])
            if i * 60 + t + 1 < len(stream):
                assert allowed == [stream[i * 60 + t + 1]]
    assert train.long_range.sum() > 0 and train.long_range.dtype == torch.bool
    with pytest.raises(ValueError, match="window must be a positive integer"):
        continual_data(window=0)


@FAST
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=80), batch_size=st.integers(1, 17),
       shuffle=st.booleans(), seed=st.integers(0, 1000))
def test_bucketing_covers_each_index_exactly_once(lengths, batch_size, shuffle, seed):
    sampler = LengthBucketSampler(lengths, batch_size, shuffle=shuffle, seed=seed)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    # buckets are contiguous in sorted length: no batch's range overlaps another's interior
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert list(LengthBucketSampler(lengths, batch_size, shuffle=shuffle, seed=seed)) == batches


def test_bucketing_drop_last_and_errors():
    sampler = LengthBucketSampler([3] * 10, 4, drop_last=True)
    assert len(sampler) == 2 and all(len(b) == 4 for b in sampler)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        LengthBucketSampler([3], 0)


def test_loader_trims_padding_to_each_batch():
    train, _ = next_symbol_data(n_train=64, n_test=8, seed=1)
    seen = []
    for batch in train.loader(batch_size=16, seed=0):
        longest = int(batch["lengths"].max())
        assert batch["inputs"].shape[1] == batch["targets"].shape[1] == batch["weights"].shape[1] == longest
        seen.append(batch["lengths"])
    assert torch.cat(seen).sort().values.tolist() == train.lengths.sort().values.tolist()
    items = [train[i] for i in range(3)]
    stacked = collate_trimmed(items)
    assert stacked["inputs"].shape[1] == int(train.lengths[:3].max())
    assert torch.equal(stacked["inputs"], collate_trimmed(train.__getitems__([0, 1, 2]))["inputs"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 7}, "n must be an even integer"),
        ({"n": 10, "negatives": "easy"}, "negatives must be one of"),
        ({"n": 10, "test_fraction": 1.0}, "test_fraction must be strictly between"),
        ({"n": 40, "min_length": 5, "max_length": 6}, "n: grammar 'reber' has only 5 distinct strings"),
        ({"n": 10, "min_length": 2, "max_length": 3}, "max_length=3 is too small"),
    ],
)
def test_classification_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        classification_data(**kwargs)


def test_next_symbol_errors():
    with pytest.raises(ValueError, match="n_test must be a positive integer"):
        next_symbol_data(n_test=0)
    with pytest.raises(ValueError, match="n: grammar 'embedded' has only 4 distinct strings"):
        next_symbol_data(n_train=3, n_test=3, max_length=9)
