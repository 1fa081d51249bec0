"""Reber-grammar tasks, tensorized once: whole-string classification, next-symbol
prediction (Hochreiter & Schmidhuber 1997) and continual next-symbol prediction on
the stream (Gers, Schmidhuber & Cummins 2000); plus length-bucketed batching.

Vocabularies (the order of the one-hot axis):

* next-symbol and continual tasks: the grammar's alphabet, sorted
  (Reber: ``B E P S T V X``);
* classification: the grammar's alphabet, then every other upper-case letter A-Z in
  alphabetical order (Reber: ``B E P S T V X A C D F G ... W Y Z``, 26 symbols), so the
  foreign letters of ``paper`` negatives and of the study's CSV files are covered and
  train and test always share one encoding.
"""

from __future__ import annotations

import string as _string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.nn.functional import one_hot
from torch.utils.data import DataLoader, Dataset, Sampler

from reber.grammar import EMBEDDED_REBER, ContinualReber, Grammar, get_grammar

__all__ = [
    "EncodedDataset",
    "LengthBucketSampler",
    "collate_trimmed",
    "classification_vocabulary",
    "classification_data",
    "classification_strings",
    "paper_negatives",
    "hard_negatives",
    "break_at",
    "encode_classification",
    "encode_next_symbol",
    "next_symbol_data",
    "continual_data",
    "stream_data",
    "encode_stream",
    "trim",
    "read_csv",
    "write_csv",
    "load_classification_csv",
]

Negatives = Literal["paper", "hard"]
Lengths = Literal["uniform", "study"]
STUDY_LENGTHS = (11, 53)
"""Length window of the study's dataset (Stier et al. 2021): 11 to 53 symbols."""
_STUDY_BASE_GROUP = 1500
"""``lengths="study"``: its negatives' valid bases are drawn as distinct strings in groups
of this many. Distinct draws favour long strings the more of them are drawn; groups of
1,500 give the length distribution of the study's invalid strings (mean 18.7, median 18,
5-95 % 13-26; docs/study.md), 12,500 at once that of its valid ones (mean 23.6)."""
_MAX_ROUNDS = 50  # rounds of drawing negatives
_DRAW_BUDGET = 200  # at most this many draws per requested distinct string (plus 10,000)


# --------------------------------------------------------------------------- dataset
@dataclass
class EncodedDataset(Dataset):
    """A task tensorized once (see docs/architecture.md for the attribute table).

    Items are dicts of row tensors; :meth:`loader` gives a ``DataLoader`` of
    length-bucketed batches whose padding is trimmed to each batch's longest sequence.
    """

    task: Literal["classify", "next_symbol"]
    vocabulary: tuple[str, ...]
    inputs: torch.Tensor
    indices: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    strings: list[str]
    weights: torch.Tensor | None = None
    long_range: torch.Tensor | None = None
    streams: int | None = None
    """Set for parallel streams (:func:`stream_data`): the rows are ``streams`` streams
    cut into consecutive windows, window-major (row ``w * streams + s`` is window ``w`` of
    stream ``s``), to be read in order with the state carried from window to window."""
    resets: torch.Tensor | None = None
    """Bool ``(N, T)``, stream data only (:func:`stream_data` with ``resets=True``): True at
    the steps where the carried state is zeroed before the step is read (every string
    start), the external reset of Gers, Schmidhuber & Cummins (2000)."""

    def __len__(self) -> int:
        return len(self.lengths)

    def _fields(self) -> dict[str, torch.Tensor]:
        names = ("inputs", "indices", "lengths", "targets", "weights", "long_range")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: value[index] for name, value in self._fields().items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (used by ``DataLoader``): one gather per tensor."""
        rows = torch.as_tensor(indices, dtype=torch.long)
        return {name: value[rows] for name, value in self._fields().items()}

    def loader(self, batch_size: int, shuffle: bool = True, seed: int = 0) -> DataLoader:
        """``DataLoader`` over length-bucketed batches (see :class:`LengthBucketSampler`)."""
        sampler = LengthBucketSampler(self.lengths, batch_size, shuffle=shuffle, seed=seed)
        return DataLoader(self, batch_sampler=sampler, collate_fn=collate_trimmed)


_PER_STEP = ("inputs", "indices", "weights", "long_range")


def trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut the time axis of every per-step tensor to the batch's longest sequence."""
    longest = int(batch["lengths"].max()) if len(batch["lengths"]) else 0
    per_step = [name for name in batch if name in _PER_STEP or (name == "targets" and batch[name].dim() == 3)]
    return {name: value[:, :longest] if name in per_step else value for name, value in batch.items()}


def collate_trimmed(batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate for :class:`EncodedDataset`: stack items (or take a ready batch) and trim padding."""
    if isinstance(batch, dict):
        return trim(batch)
    return trim({name: torch.stack([item[name] for item in batch]) for name in batch[0]})


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of indices with similar lengths, so little padding is computed.

    Indices are sorted by length (ties broken at random), cut into consecutive batches
    of ``batch_size``, and the batch order is shuffled. Every index appears in exactly
    one batch per epoch. Seeded: the sequence of epochs is reproducible.
    """

    def __init__(
        self,
        lengths: torch.Tensor | Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        _check_positive(batch_size, "batch_size")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order[torch.argsort(self.lengths[order], stable=True)]
        batches = list(torch.split(order, self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator)]
        for batch in batches:
            yield batch.tolist()


# --------------------------------------------------------------------------- encoding
def _index_matrix(strings: Sequence[str], vocabulary: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbol indices ``(N, T)`` padded with -1, and lengths ``(N,)``, in one vectorized pass."""
    if not strings:
        raise ValueError("strings must not be empty")
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    if lengths.min() < 1:
        raise ValueError("strings must all be non-empty")
    codes = np.frombuffer("".join(strings).encode("utf-32-le"), dtype=np.uint32)
    vocab_codes = np.array([ord(symbol) for symbol in vocabulary], dtype=np.int64)
    lookup = np.full(max(int(codes.max()), int(vocab_codes.max())) + 1, -1, dtype=np.int64)
    lookup[vocab_codes] = np.arange(len(vocabulary))
    flat = lookup[codes]
    if (flat < 0).any():
        unknown = sorted({chr(c) for c in codes[flat < 0]})
        raise ValueError(f"strings contain symbols {unknown} outside the vocabulary {tuple(vocabulary)}")
    rows = np.repeat(np.arange(len(strings)), lengths)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    indices = np.full((len(strings), int(lengths.max())), -1, dtype=np.int64)
    indices[rows, cols] = flat
    return torch.from_numpy(indices), torch.from_numpy(lengths)


def _one_hot(indices: torch.Tensor, size: int) -> torch.Tensor:
    """Float32 one-hot of ``indices``, all zeros where the index is -1 (padding)."""
    return one_hot(indices.clamp(min=0), size).float() * (indices >= 0).unsqueeze(-1)


def _pad(rows: Sequence[np.ndarray], steps: int) -> torch.Tensor:
    """Stack per-sequence arrays ``(len, ...)`` into float32 ``(N, steps, ...)``, zero-padded."""
    out = np.zeros((len(rows), steps, *rows[0].shape[1:]), dtype=np.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def _step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Bool ``(N, steps)``: True at the real (unpadded) steps."""
    return torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)


def classification_vocabulary(grammar: str | Grammar = "reber") -> tuple[str, ...]:
    """The grammar's alphabet followed by the other upper-case letters A-Z."""
    alphabet = get_grammar(grammar).alphabet
    return alphabet + tuple(c for c in _string.ascii_uppercase if c not in alphabet)


def encode_classification(
    strings: Sequence[str], labels: Sequence[int] | np.ndarray, vocabulary: Sequence[str]
) -> EncodedDataset:
    """Tensorize whole-string classification data (``labels`` 1 = valid, 0 = invalid)."""
    labels = np.asarray(labels)
    if labels.shape != (len(strings),) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be {len(strings)} values in {{0, 1}}")
    indices, lengths = _index_matrix(strings, vocabulary)
    return EncodedDataset(
        task="classify",
        vocabulary=tuple(vocabulary),
        inputs=_one_hot(indices, len(vocabulary)),
        indices=indices,
        lengths=lengths,
        targets=torch.as_tensor(labels, dtype=torch.float32),
        strings=list(strings),
    )


def encode_next_symbol(strings: Sequence[str], grammar: str | Grammar = "embedded") -> EncodedDataset:
    """Tensorize next-symbol prediction: the input at step t is ``s[t]``, the target the
    multi-hot set of symbols the grammar allows after ``s[: t + 1]``. The final symbol
    (nothing follows it) is not an input, so ``lengths = len(s) - 1``."""
    g = get_grammar(grammar)
    invalid = [s for s in strings if not g.is_valid(s)]
    if invalid:
        raise ValueError(f"strings must be valid strings of grammar {g.name!r}, e.g. not {invalid[0]!r}")
    inputs = [s[:-1] for s in strings]
    indices, lengths = _index_matrix(inputs, g.alphabet)
    steps = indices.shape[1]
    return EncodedDataset(
        task="next_symbol",
        vocabulary=g.alphabet,
        inputs=_one_hot(indices, len(g.alphabet)),
        indices=indices,
        lengths=lengths,
        targets=_pad([g.next_symbol_mask(s)[:-1] for s in strings], steps),
        weights=_step_mask(lengths, steps).float(),
        strings=list(strings),
    )


# --------------------------------------------------------------------------- sampling helpers
def _distinct_valid(
    grammar: Grammar, n: int, rng: np.random.Generator, min_length: int | None, max_length: int | None,
    lengths: Literal["grammar", "uniform"],
) -> list[str]:
    """``n`` distinct valid strings, in order of first draw."""
    available = grammar.count(min_length, max_length)
    if available < n:
        raise ValueError(
            f"n: grammar {grammar.name!r} has only {available} distinct strings with lengths in "
            f"[{min_length}, {max_length}], {n} requested; widen the length window or lower n"
        )
    found: dict[str, None] = {}
    batch, budget = 2 * n + 16, _DRAW_BUDGET * n + 10_000
    while len(found) < n and budget > 0:
        for s in grammar.sample(min(batch, budget), rng, min_length, max_length, lengths):
            if s not in found and len(found) < n:
                found[s] = None
        budget -= batch
        batch *= 2  # repeats mean the remaining strings are rare: draw more at a time
    if len(found) < n:
        raise ValueError(
            f"n: found only {len(found)} of {n} distinct strings of {grammar.name!r} in "
            f"{_DRAW_BUDGET}n draws with lengths={lengths!r}; use lengths='uniform' or a wider length window"
        )
    return list(found)


def _shuffled(strings: list[str], rng: np.random.Generator) -> list[str]:
    """``strings`` in random order. Distinct draws come out common strings first (short
    ones, for the Reber grammars), so splitting them in draw order would give the test
    split other lengths than the training split (measured: valid strings 20.3 against 24.8
    symbols on the study-like data); a split of shuffled strings is a random partition."""
    return [strings[i] for i in rng.permutation(len(strings))]


def _inner_alphabet(grammar: Grammar) -> tuple[str, ...]:
    """Symbols of the grammar other than its first and last (B and E for Reber)."""
    outer = set(grammar.transitions[grammar.start])
    outer |= {sym for edges in grammar.transitions.values() for sym, t in edges.items() if t == grammar.accept}
    return tuple(s for s in grammar.alphabet if s not in outer)


def _relabel_foreign(base: str, grammar: Grammar, rng: np.random.Generator) -> str:
    """``base`` with its inner symbols renamed by a random one-to-one map onto the inner
    alphabet plus foreign letters, using at least one foreign letter."""
    inner = _inner_alphabet(grammar)
    foreign = classification_vocabulary(grammar)[len(grammar.alphabet) :]
    pool = np.array(inner + foreign)
    for _ in range(1000):
        mapping = dict(zip(inner, rng.permutation(pool)[: len(inner)]))
        middle = "".join(mapping.get(c, c) for c in base[1:-1])
        if any(c in foreign for c in middle):
            return base[0] + middle + base[-1]
    raise ValueError(f"negatives='paper': cannot rename {base!r} with letters outside {grammar.alphabet}")


def break_at(base: str, position: int, grammar: Grammar, rng: np.random.Generator) -> str:
    """``base`` with the symbol at ``position`` (0-based) replaced by one the grammar
    forbids there (an inner symbol when possible, as in the study's strings); the rest of
    ``base`` is kept: one wrong symbol in a valid string."""
    allowed = grammar.next_symbols(base[:position])
    wrong = [c for c in _inner_alphabet(grammar) if c not in allowed]
    wrong = wrong or [c for c in grammar.alphabet if c not in allowed]
    return base[:position] + str(rng.choice(wrong)) + base[position + 1 :]


# Mix of the study's 12,500 invalid strings (see docs/reber.md): 7,000 with foreign
# letters, 3,500 broken at the third symbol, 2,000 broken later.
_PAPER_MIX = {"foreign": 0.56, "third": 0.28, "later": 0.16}


def _study_bases(grammar: Grammar, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` valid strings in ``STUDY_LENGTHS``, distributed as the grammar draws them and
    distinct within each group of ``_STUDY_BASE_GROUP``."""
    bases: list[str] = []
    while len(bases) < n:
        group = min(_STUDY_BASE_GROUP, n - len(bases))
        bases += _distinct_valid(grammar, group, rng, *STUDY_LENGTHS, "grammar")
    return bases


def paper_negatives(bases: Sequence[str], grammar: str | Grammar, rng: np.random.Generator) -> list[str]:
    """Invalid strings like the study's dataset, one per valid ``base`` string: with
    probability 0.56 its inner symbols renamed using letters outside the alphabet,
    0.28 its third symbol replaced by a disallowed one, 0.16 a later symbol
    (position 3 + a geometric number of steps) replaced by a disallowed one."""
    g = get_grammar(grammar)
    kinds = rng.choice(list(_PAPER_MIX), size=len(bases), p=list(_PAPER_MIX.values()))
    out = []
    for base, kind in zip(bases, kinds):
        if kind == "foreign":
            out.append(_relabel_foreign(base, g, rng))
        else:
            later = 2 + int(rng.geometric(0.35))
            position = min(2 if kind == "third" else later, len(base) - 2)
            out.append(break_at(base, position, g, rng))
    return out


def hard_negatives(bases: Sequence[str], grammar: str | Grammar, rng: np.random.Generator) -> list[str]:
    """One invalid string per valid ``base``: a single random edit (substitution,
    insertion, deletion or transposition of adjacent symbols) within the grammar's
    alphabet, redrawn until the result is invalid."""
    g = get_grammar(grammar)
    return [_invalid_edit(base, g, rng) for base in bases]


def _invalid_edit(base: str, grammar: Grammar, rng: np.random.Generator) -> str:
    alphabet = grammar.alphabet
    for _ in range(1000):
        kind = rng.integers(4)
        i = int(rng.integers(len(base)))
        symbol = alphabet[int(rng.integers(len(alphabet)))]
        if kind == 0:
            edited = base[:i] + symbol + base[i + 1 :]
        elif kind == 1:
            edited = base[:i] + symbol + base[i:]
        elif kind == 2:
            edited = base[:i] + base[i + 1 :]
        else:
            i = min(i, len(base) - 2)
            edited = base[:i] + base[i + 1] + base[i] + base[i + 2 :]
        if edited and not grammar.is_valid(edited):
            return edited
    raise ValueError(f"no single edit of {base!r} is invalid in grammar {grammar.name!r}")


_NEGATIVES = {"paper": paper_negatives, "hard": hard_negatives}


def _distinct_negatives(
    kind: Negatives, grammar: Grammar, n: int, rng: np.random.Generator,
    min_length: int | None, max_length: int | None, lengths: Lengths = "uniform",
) -> list[str]:
    """``n`` distinct invalid strings made by ``kind`` from freshly sampled valid strings
    (``lengths="study"``: distinct in groups, see ``_STUDY_BASE_GROUP``).

    ``hard`` negatives are kept inside the positives' length window, so that an insertion
    or deletion at its edge never lets length alone give the class away.
    """
    low = min_length if kind == "hard" and min_length is not None else 0
    high = max_length if kind == "hard" and max_length is not None else float("inf")
    found: dict[str, None] = {}
    for _ in range(_MAX_ROUNDS):
        need = n - len(found)
        if need == 0:
            break
        bases = (_study_bases(grammar, need, rng) if lengths == "study"
                 else grammar.sample(need, rng, min_length, max_length, lengths="uniform"))
        for s in _NEGATIVES[kind](bases, grammar, rng):
            if low <= len(s) <= high and not grammar.is_valid(s):
                found[s] = None
    if len(found) < n:
        raise ValueError(f"n: could not draw {n} distinct {kind} negatives; widen the length window")
    return list(found)[:n]


# --------------------------------------------------------------------------- tasks
def _check_positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_fraction(test_fraction: float) -> float:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    return float(test_fraction)


def classification_strings(
    n: int = 25_000,
    negatives: Negatives = "paper",
    grammar: str | Grammar = "reber",
    test_fraction: float = 0.25,
    seed: int = 0,
    min_length: int = 11,
    max_length: int = 35,
    lengths: Lengths = "uniform",
) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """The raw ``(strings, labels)`` of the train and test splits of :func:`classification_data`."""
    if lengths not in ("uniform", "study"):
        raise ValueError(f"lengths must be 'uniform' or 'study', got {lengths!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 4 or n % 2:
        raise ValueError(f"n must be an even integer >= 4 (half valid, half invalid), got {n!r}")
    if negatives not in _NEGATIVES:
        raise ValueError(f"negatives must be one of {sorted(_NEGATIVES)}, got {negatives!r}")
    test_fraction = _check_fraction(test_fraction)
    g = get_grammar(grammar)
    rng = np.random.default_rng(seed)
    half = n // 2
    if lengths == "study":
        min_length, max_length = STUDY_LENGTHS
    positives = _shuffled(_distinct_valid(g, half, rng, min_length, max_length,
                                          "grammar" if lengths == "study" else "uniform"), rng)
    negative = _shuffled(_distinct_negatives(negatives, g, half, rng, min_length, max_length, lengths), rng)
    n_test = min(max(round(half * test_fraction), 1), half - 1)
    splits = []
    for part in (slice(n_test, None), slice(None, n_test)):
        strings = positives[part] + negative[part]
        labels = np.r_[np.ones(len(positives[part]), int), np.zeros(len(negative[part]), int)]
        order = rng.permutation(len(strings))
        splits.append(([strings[i] for i in order], labels[order]))
    return splits[0], splits[1]


def classification_data(
    n: int = 25_000,
    negatives: Negatives = "paper",
    grammar: str | Grammar = "reber",
    test_fraction: float = 0.25,
    seed: int = 0,
    min_length: int = 11,
    max_length: int = 35,
    lengths: Lengths = "uniform",
) -> tuple[EncodedDataset, EncodedDataset]:
    """Balanced valid-vs-invalid classification, de-duplicated, train/test disjoint.

    ``n`` strings in all: half valid, half invalid (``negatives``: ``"paper"`` like
    the study's dataset, ``"hard"`` one edit away from a valid string), made from
    valid strings drawn with ``lengths="uniform"`` (:meth:`Grammar.sample`) in
    ``[min_length, max_length]``; the defaults mimic the study's dataset (valid
    strings of 11 to 53 symbols, mostly 15 to 32). Each class is split by
    ``test_fraction``. Encoded with :func:`classification_vocabulary`.

    ``lengths="study"`` matches the study's length distributions instead (docs/study.md):
    valid strings distinct and distributed as the grammar draws them in
    ``STUDY_LENGTHS`` (``min_length``/``max_length`` do not apply), negatives made from
    such strings drawn in groups (``_STUDY_BASE_GROUP``), so they are shorter, as there.
    """
    train, test = classification_strings(n, negatives, grammar, test_fraction, seed, min_length, max_length,
                                         lengths)
    vocabulary = classification_vocabulary(grammar)
    return encode_classification(*train, vocabulary), encode_classification(*test, vocabulary)


def next_symbol_data(
    grammar: str | Grammar = "embedded",
    n_train: int = 256,
    n_test: int = 256,
    seed: int = 0,
    min_length: int | None = None,
    max_length: int | None = None,
    lengths: Literal["grammar", "uniform"] = "grammar",
) -> tuple[EncodedDataset, EncodedDataset]:
    """Next-symbol prediction after Hochreiter & Schmidhuber (1997): ``n_train`` and
    ``n_test`` distinct strings (disjoint), one-hot inputs, multi-hot targets of the
    allowed next symbols. Success: at every step of every string, the outputs of all
    allowed symbols exceed all others (:func:`reber.metrics.hs_success`).

    Strings follow the grammar's own distribution (``lengths="grammar"``, as in H&S);
    it repeats short strings often, so for thousands of distinct strings use
    ``lengths="uniform"`` with a ``max_length`` (see :meth:`Grammar.sample`)."""
    g = get_grammar(grammar)
    _check_positive(n_train, "n_train")
    _check_positive(n_test, "n_test")
    rng = np.random.default_rng(seed)
    strings = _shuffled(_distinct_valid(g, n_train + n_test, rng, min_length, max_length, lengths), rng)
    return encode_next_symbol(strings[:n_train], g), encode_next_symbol(strings[n_train:], g)


def encode_stream(stream: str, window: int, process: ContinualReber) -> EncodedDataset:
    """Tensorize a continual stream, cut into consecutive ``window``-symbol pieces, for
    next-symbol prediction (a trailing partial piece is dropped).

    The stream is parsed once as a whole, so pieces may start mid-string. Every step
    has a target (the stream goes on). A step is scored (``weights`` 1) from the first
    string start inside its piece on, since before it the network cannot know where
    in a string it is; ``long_range`` marks scored steps whose target is the
    long-range T/P symbol.
    """
    count = len(stream) // window
    if count < 1:
        raise ValueError(f"window={window} is longer than the stream ({len(stream)} symbols)")
    usable = stream[: count * window]
    indices, lengths = _index_matrix([usable[i : i + window] for i in range(0, len(usable), window)], process.alphabet)
    scored = np.maximum.accumulate(process.start_mask(usable).reshape(count, window), axis=1)
    long_range = process.long_range_mask(usable).reshape(count, window) & scored
    targets = process.next_symbol_mask(usable).reshape(count, window, len(process.alphabet))
    return EncodedDataset(
        task="next_symbol",
        vocabulary=process.alphabet,
        inputs=_one_hot(indices, len(process.alphabet)),
        indices=indices,
        lengths=lengths,
        targets=torch.from_numpy(targets.astype(np.float32)),
        weights=torch.from_numpy(scored.astype(np.float32)),
        long_range=torch.from_numpy(long_range),
        strings=[usable[i : i + window] for i in range(0, len(usable), window)],
    )


def continual_data(
    n_train: int = 256,
    n_test: int = 64,
    window: int = 100,
    grammar: str | Grammar = EMBEDDED_REBER,
    seed: int = 0,
) -> tuple[EncodedDataset, EncodedDataset]:
    """Continual next-symbol prediction (Gers, Schmidhuber & Cummins 2000): consecutive
    ``window``-symbol pieces of two independent seeded streams of concatenated
    strings (one for training, one for testing). See :func:`encode_stream`."""
    for value, name in ((n_train, "n_train"), (n_test, "n_test"), (window, "window")):
        _check_positive(value, name)
    process = ContinualReber(get_grammar(grammar))
    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    out = []
    for count, child in ((n_train, train_seed), (n_test, test_seed)):
        stream = process.stream(count * window, seed=np.random.default_rng(child))
        out.append(encode_stream(stream, window, process))
    return out[0], out[1]


def stream_data(
    streams: int = 16,
    windows: int = 20,
    window: int = 50,
    grammar: str | Grammar = EMBEDDED_REBER,
    seed: int = 0,
    resets: bool = False,
) -> EncodedDataset:
    """Continual prediction as Gers, Schmidhuber & Cummins (2000) defined it: ``streams``
    independent seeded streams of concatenated strings, each ``windows * window`` symbols
    long, never reset. Rows are the streams' consecutive ``window``-symbol pieces,
    window-major (``EncodedDataset.streams``), so a training loop that carries each row's
    state to the next batch of ``streams`` rows runs every stream unbroken (truncated
    backpropagation through time over ``window`` steps). Every step is scored from the
    stream's first symbol on (the state knows where it is); ``long_range`` marks the T/P
    steps. ``streams = 1`` is one long stream, as for the paper's stream evaluation.
    ``resets=True`` adds the paper's "external reset" condition: ``resets`` flags every
    string start (``ContinualReber.start_mask``), where a stateful model zeroes its state."""
    for value, name in ((streams, "streams"), (windows, "windows"), (window, "window")):
        _check_positive(value, name)
    process = ContinualReber(get_grammar(grammar))
    pieces = []
    for child in np.random.SeedSequence(seed).spawn(streams):
        stream = process.stream(windows * window, seed=np.random.default_rng(child))
        encoded = encode_stream(stream, window, process)
        encoded.weights = torch.ones_like(encoded.weights)  # scored from the stream's first symbol on
        encoded.long_range = torch.from_numpy(process.long_range_mask(stream).reshape(windows, window))
        if resets:
            encoded.resets = torch.from_numpy(process.start_mask(stream).reshape(windows, window))
        pieces.append(encoded)
    order = torch.arange(streams * windows).view(streams, windows).t().reshape(-1)  # window-major
    return EncodedDataset(
        task="next_symbol",
        vocabulary=process.alphabet,
        inputs=torch.cat([p.inputs for p in pieces])[order],
        indices=torch.cat([p.indices for p in pieces])[order],
        lengths=torch.cat([p.lengths for p in pieces])[order],
        targets=torch.cat([p.targets for p in pieces])[order],
        weights=torch.cat([p.weights for p in pieces])[order],
        long_range=torch.cat([p.long_range for p in pieces])[order],
        strings=[p.strings[w] for w in range(windows) for p in pieces],
        streams=streams,
        resets=torch.cat([p.resets for p in pieces])[order] if resets else None,
    )


# --------------------------------------------------------------------------- CSV
def read_csv(path: str | PathLike) -> tuple[list[str], np.ndarray]:
    """Read the study's format (``,string,valid`` with an index column): strings of
    upper-case letters A-Z and 0/1 labels; a ValueError names the file and the first bad
    row (counting the header as row 1, as an editor shows it)."""
    try:
        frame = pd.read_csv(path, index_col=0, dtype={"string": str}, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty; expected ',string,valid' and one row per string") from None
    missing = {"string", "valid"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected ',string,valid'")
    if frame.empty:
        raise ValueError(f"{path}: no rows; expected one row per string")
    strings = frame["string"].astype(str).tolist()
    _check_letters(strings, path, first_row=2)
    labels = pd.to_numeric(frame["valid"], errors="coerce").to_numpy()
    bad = np.flatnonzero(~np.isin(labels, (0, 1)))
    if len(bad):
        raise ValueError(f"{path}: row {bad[0] + 2}: valid must be 0 or 1, got {frame['valid'].astype(str).iloc[bad[0]]!r}")
    return strings, labels.astype(np.int64)


def read_lines(path: str | PathLike, grammar: str | Grammar = "embedded") -> list[str]:
    """Strings for next-symbol prediction, one per line, each a valid string of
    ``grammar``; a ValueError names the file and the first bad line."""
    g = get_grammar(grammar)
    strings = Path(path).read_text(encoding="utf-8").splitlines()
    if not strings:
        raise ValueError(f"{path}: the file is empty; expected one string of grammar {g.name!r} per line")
    _check_letters(strings, path, first_row=1)
    for row, string in enumerate(strings, start=1):
        if not g.is_valid(string):
            raise ValueError(f"{path}: line {row}: {string!r} is not a string of grammar {g.name!r}")
    return strings


def _check_letters(strings: Sequence[str], path: str | PathLike, first_row: int) -> None:
    """Raise ValueError naming the first row whose string is empty or not all A-Z."""
    for row, string in enumerate(strings, start=first_row):
        if not string or not all(c in _string.ascii_uppercase for c in string):
            raise ValueError(f"{path}: row {row}: strings must be non-empty upper-case letters A-Z, got {string!r}")


def write_csv(path: str | PathLike, strings: Sequence[str], labels: Sequence[int] | np.ndarray) -> None:
    """Write ``strings`` and 0/1 ``labels`` in the study's format (``,string,valid``)."""
    pd.DataFrame({"string": list(strings), "valid": np.asarray(labels, dtype=np.int64)}).to_csv(path)


def load_classification_csv(path: str | PathLike, grammar: str | Grammar = "reber") -> EncodedDataset:
    """A CSV in the study's format, encoded with :func:`classification_vocabulary`."""
    return encode_classification(*read_csv(path), classification_vocabulary(grammar))
