"""Grammars: sampling, validity, next-symbol sets, probabilities, enumeration, errors."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reber.grammar import EMBEDDED_REBER, REBER, ContinualReber, Grammar, embed, get_grammar

GRAMMARS = [REBER, EMBEDDED_REBER]
FAST = settings(max_examples=25, deadline=None)

#: B (A A)* E: only even numbers of A, so only even lengths >= 2 exist.
EVEN = Grammar("even", {"s": {"B": "q"}, "q": {"A": "r", "E": "f"}, "r": {"A": "q"}}, start="s", accept="f")


@lru_cache(maxsize=None)
def _language(grammar: Grammar, max_length: int) -> frozenset[str]:
    return frozenset(grammar.enumerate(max_length))


def test_reber_enumeration_by_hand():
    # Hochreiter & Schmidhuber (1997) Fig. 5, all strings of at most 7 symbols.
    assert REBER.enumerate(7) == [
        "BPVVE", "BTXSE", "BPTVVE", "BPVPSE", "BTSXSE", "BPTTVVE", "BPTVPSE", "BTSSXSE", "BTXXVVE",
    ]
    assert REBER.alphabet == ("B", "E", "P", "S", "T", "V", "X")
    assert EMBEDDED_REBER.enumerate(9) == ["BPBPVVEPE", "BPBTXSEPE", "BTBPVVETE", "BTBTXSETE"]


def test_probability_by_hand():
    assert REBER.probability("BTXSE") == pytest.approx(1 / 8)
    assert REBER.probability("BTSSXSE") == pytest.approx(1 / 32)
    assert EMBEDDED_REBER.probability("BTBTXSETE") == pytest.approx(1 / 16)
    assert REBER.probability("BTXS") == 0.0 and REBER.probability("BTXSEE") == 0.0


def test_probabilities_sum_to_the_mass_of_short_strings():
    # B (AA)^k E has probability 2^-(k+1); the strings up to length 2 + 2k hold 1 - 2^-(k+1).
    assert sum(map(EVEN.probability, EVEN.enumerate(12))) == pytest.approx(1 - 2**-6)
    # Reber: the enumerated mass up to length 16 matches the share of samples that short.
    mass = sum(map(REBER.probability, REBER.enumerate(16)))
    share = np.mean([len(s) <= 16 for s in REBER.sample(20000, seed=5)])
    assert mass == pytest.approx(share, abs=4 * np.sqrt(mass * (1 - mass) / 20000))


@pytest.mark.parametrize("grammar", GRAMMARS, ids=lambda g: g.name)
def test_count_matches_enumeration(grammar):
    strings = grammar.enumerate(16)
    assert grammar.count(max_length=16) == len(strings) == len(set(strings))
    assert grammar.count(12, 16) == sum(12 <= len(s) <= 16 for s in strings)
    assert grammar.count() == float("inf")


@FAST
@given(grammar=st.sampled_from(GRAMMARS), seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40),
       lo=st.integers(0, 30), width=st.integers(0, 12), mode=st.sampled_from(["grammar", "uniform"]))
def test_samples_are_valid_within_bounds_and_reproducible(grammar, seed, n, lo, width, mode):
    lo = max(lo, grammar.shortest_length)
    strings = grammar.sample(n, seed=seed, min_length=lo, max_length=lo + width, lengths=mode)
    assert len(strings) == n
    assert all(grammar.is_valid(s) and lo <= len(s) <= lo + width for s in strings)
    assert grammar.sample(n, seed=seed, min_length=lo, max_length=lo + width, lengths=mode) == strings


@FAST
@given(seed=st.integers(0, 2**32 - 1), lo=st.integers(0, 200))
def test_min_length_only_is_met_without_rejection(seed, lo):
    strings = REBER.sample(20, seed=seed, min_length=lo)
    assert all(REBER.is_valid(s) and len(s) >= lo for s in strings)


def test_different_seeds_differ():
    assert REBER.sample(50, seed=1) != REBER.sample(50, seed=2)


def test_sampling_follows_uniform_branching():
    strings = REBER.sample(8000, seed=3)
    counts = Counter(strings)
    for s in ["BTXSE", "BPVVE", "BTSXSE"]:
        expected = REBER.probability(s)
        assert counts[s] / len(strings) == pytest.approx(expected, abs=4 * np.sqrt(expected / len(strings)))


def test_length_window_conditions_the_branching_distribution():
    # Within length 5 only BTXSE and BPVVE exist, each with probability 1/8: equal odds.
    counts = Counter(REBER.sample(4000, seed=0, min_length=5, max_length=5))
    assert set(counts) == {"BTXSE", "BPVVE"}
    assert counts["BTXSE"] / 4000 == pytest.approx(0.5, abs=0.05)


def test_uniform_lengths_spread_over_strings_and_lengths():
    strings = REBER.sample(7000, seed=0, min_length=8, max_length=8, lengths="uniform")
    counts = Counter(strings)
    assert len(counts) == REBER.count(8, 8) == 7
    assert all(c / 7000 == pytest.approx(1 / 7, abs=0.03) for c in counts.values())
    lengths = Counter(map(len, REBER.sample(3000, seed=0, min_length=10, max_length=12, lengths="uniform")))
    assert all(c / 3000 == pytest.approx(1 / 3, abs=0.05) for c in lengths.values())


@FAST
@given(grammar=st.sampled_from(GRAMMARS), data=st.data())
def test_next_symbols_agree_with_is_valid(grammar, data):
    # Every complete string is in the enumerated language up to 18 symbols, and a
    # symbol may follow a prefix iff some string of the language continues that way.
    string = data.draw(st.sampled_from(sorted(_language(grammar, 12), key=lambda s: (len(s), s))))
    cut = data.draw(st.integers(0, len(string)))
    prefix = string[:cut]
    language = _language(grammar, 18)
    continuations = {s[cut] for s in language if len(s) > cut and s.startswith(prefix)}
    assert grammar.next_symbols(prefix) == continuations
    for symbol in grammar.alphabet:
        assert grammar.is_valid(prefix + symbol) == (prefix + symbol in language)


@FAST
@given(text=st.text(alphabet="BEPSTVXAQ", max_size=14))
def test_is_valid_matches_enumeration_on_arbitrary_text(text):
    assert REBER.is_valid(text) == (text in _language(REBER, 14))
    dead = any(not REBER.next_symbols(text[:t]) for t in range(len(text)))
    assert REBER.next_symbols(text) == frozenset() or not dead


def test_next_symbol_mask_rows_are_next_symbol_sets():
    s = "BTBPVPSETE"
    mask = EMBEDDED_REBER.next_symbol_mask(s)
    for t in range(len(s)):
        allowed = {a for a, m in zip(EMBEDDED_REBER.alphabet, mask[t]) if m}
        assert allowed == EMBEDDED_REBER.next_symbols(s[: t + 1])
    with pytest.raises(ValueError, match="position 2"):
        REBER.next_symbol_mask("BTT")


def test_custom_grammar_uses_the_same_api():
    assert EVEN.enumerate(6) == ["BE", "BAAE", "BAAAAE"]
    assert EVEN.sample(5, seed=0, min_length=9, max_length=10) == ["BAAAAAAAAE"] * 5
    assert EVEN.next_symbols("BA") == {"A"}
    assert EVEN.probability("BAAE") == pytest.approx(0.25)
    assert get_grammar(EVEN) is EVEN


def test_embed_builds_two_copies_of_the_inner_machine():
    grammar = embed(EVEN, branches=("X", "Y"))
    assert grammar.is_valid("BXBAAEXE") and not grammar.is_valid("BXBAAEYE")
    assert len(grammar.states) == 2 * len(EVEN.states) + 4
    assert grammar.next_symbols("BYBE") == {"Y"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": -1}, "n must be a non-negative integer"),
        ({"n": 2.5}, "n must be a non-negative integer"),
        ({"n": 1, "max_length": 4}, "max_length=4 is too small.*length 5"),
        ({"n": 1, "min_length": 9, "max_length": 8}, "min_length=9 exceeds max_length=8"),
        ({"n": 1, "lengths": "long"}, "lengths must be"),
        ({"n": 1, "lengths": "uniform"}, "max_length must be given"),
    ],
)
def test_impossible_requests_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        REBER.sample(**kwargs)


def test_unreachable_lengths_raise_with_nearest_lengths():
    with pytest.raises(ValueError, match=r"no string with a length in that range; nearest lengths: \[4, 6\]"):
        EVEN.sample(1, min_length=5, max_length=5)
    finite = Grammar("finite", {"s": {"B": "q"}, "q": {"E": "f"}}, start="s", accept="f")
    with pytest.raises(ValueError, match="min_length=3 is too large.*length 2"):
        finite.sample(1, min_length=3)


@pytest.mark.parametrize(
    "transitions, start, accept, message",
    [
        ({"s": {"B": "f"}}, "x", "f", "start='x'"),
        ({"s": {"B": "q"}, "q": {"E": "s"}}, "s", "f", "accept='f'"),
        ({"s": {"B": "f"}, "f": {"E": "s"}}, "s", "f", "no outgoing"),
        ({"s": {"BB": "f"}}, "s", "f", "single characters"),
        ({"s": {"B": "f", "A": "q"}, "q": {"A": "q"}}, "s", "f", r"states \['q'\]"),
    ],
)
def test_malformed_automata_raise(transitions, start, accept, message):
    with pytest.raises(ValueError, match=message):
        Grammar("bad", transitions, start=start, accept=accept)


def test_bad_names_and_types_raise():
    with pytest.raises(ValueError, match="grammar must be one of"):
        get_grammar("dyck")
    with pytest.raises(ValueError, match="string must be a str"):
        REBER.is_valid(["B", "E"])
    with pytest.raises(ValueError, match="max_length must be a non-negative integer"):
        REBER.enumerate(-1)


def test_continual_stream_annotations():
    process = ContinualReber()
    stream = process.stream(400, seed=0)
    assert len(stream) == 400 and process.is_valid(stream) and stream == process.stream(400, seed=0)
    assert not process.is_valid("BTBTXSETEBTBTXSEPE")
    starts = process.start_mask(stream)
    long_range = process.long_range_mask(stream)
    begin = np.flatnonzero(starts)
    for a, b in zip(begin[:-1], begin[1:]):
        string = stream[a:b]
        assert EMBEDDED_REBER.is_valid(string)
        # the only long-range step is the one before the closing T/P, which repeats the second symbol
        assert np.flatnonzero(long_range[a:b]).tolist() == [len(string) - 3]
        assert string[-2] == string[1]
    mask = process.next_symbol_mask(stream)
    assert mask[begin[1] - 1].tolist() == [a == "B" for a in process.alphabet]
    with pytest.raises(ValueError, match="length must be"):
        process.stream(-3)
