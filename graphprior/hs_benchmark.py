"""The embedded-Reber benchmark of Hochreiter & Schmidhuber (1997), experiment 1.

A trial trains one freshly initialized network on next-symbol prediction of embedded
Reber strings (256 training and 256 test strings) until it *solves* the task, or until a
budget of training sequences runs out. Solved means the H&S success criterion
(:func:`reber.metrics.hs_success`): at every step of every test and training string, the
outputs of all allowed next symbols exceed all others. The benchmark reports, like H&S's
Table 1, how many trials were solved and how many training sequences that took.

H&S trained online (one weight update per sequence); ``batch_size > 1`` gives the
mini-batch mode. Training is :func:`rnn_models.train.fit`; :class:`SolvedCheck` is the
hook that tests the criterion every ``check_every`` sequences and stops the run.

Reference: S. Hochreiter and J. Schmidhuber, "Long short-term memory", Neural
Computation 9(8), 1735-1780 (1997), Sec. 5.1 and Table 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from graphprior.executors import make_executor, set_torch_threads
from reber.metrics import hs_success
from reber.tasks import EncodedDataset, next_symbol_data

if TYPE_CHECKING:
    from rnn_models.train import TrainState

PUBLISHED = {"model": "LSTM (H&S 1997, published)", "trials": 150, "solved": 148, "mean_sequences": 8440.0}
"""Hochreiter & Schmidhuber's LSTM on embedded Reber, as the design notes cite it: 148 of
150 trials solved, after 8,440 training sequences on average."""

PRIORS = ("dense", "watts_strogatz", "barabasi_albert", "erdos_renyi_gnp")
"""Hidden-to-hidden structures a trial can train: none (dense) or a random graph's mask."""

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


@dataclass(frozen=True)
class Protocol:
    """Settings shared by every trial. ``budget`` and ``check_every`` count training
    sequences; ``batch_size`` 1 is H&S's online learning. The defaults (a modern LSTM of 32
    units, Adam at 0.01) solve most trials in about 5,000-20,000 sequences, at about a
    millisecond per sequence on one core."""

    hidden_size: int = 32
    batch_size: int = 1
    optimizer: str = "adam"
    lr: float = 0.01
    budget: int = 100_000
    check_every: int = 128
    n_train: int = 256
    n_test: int = 256

    def __post_init__(self) -> None:
        for name in ("hidden_size", "batch_size", "budget", "check_every", "n_train", "n_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size must be <= n_train ({self.n_train}), got {self.batch_size}")


@dataclass(frozen=True)
class TrialSpec:
    """One trial: a cell type, a prior and the seed of its data, graph and weights."""

    cell: str
    prior: str
    seed: int
    protocol: Protocol

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")

    @property
    def model(self) -> str:
        return self.cell if self.prior == "dense" else f"{self.cell} + {self.prior}"


@dataclass(frozen=True)
class Trial:
    """The outcome of one trial: solved or not, the training sequences it took (NaN when
    unsolved), the density of its recurrent mask and its wall-clock seconds."""

    model: str
    cell: str
    prior: str
    seed: int
    solved: bool
    sequences: float
    density: float
    seconds: float


# --------------------------------------------------------------------------- one trial

def prior_mask(prior: str, hidden_size: int, seed: int) -> torch.Tensor | None:
    """The ``(H, H)`` hidden-to-hidden mask of a prior (None for dense): a graph of
    ``hidden_size`` nodes with about 4 neighbours per node, symmetric orientation."""
    if prior == "dense":
        return None
    from graphprior.generators import generate
    from graphprior.priors import recurrent_mask

    params = {
        "watts_strogatz": {"k": min(4, hidden_size - 1 - (hidden_size - 1) % 2), "p": 0.1},
        "barabasi_albert": {"m": min(2, hidden_size - 1)},
        "erdos_renyi_gnp": {"p": min(1.0, 4 / max(hidden_size - 1, 1))},
    }[prior]
    return recurrent_mask(generate(prior, n=hidden_size, seed=seed, **params), orientation="symmetric")


class SolvedCheck:
    """A training hook: every ``check_every`` sequences, test the H&S criterion on the test
    strings and then the training strings; when both hold, record the sequences seen and
    stop. Also stops at the ``budget``. Sequences are counted exactly from the optimizer
    steps of the current epoch (batches are not bucketed, so only an epoch's last batch
    may be smaller)."""

    def __init__(self, train: EncodedDataset, test: EncodedDataset, protocol: Protocol) -> None:
        self.sets = (test, train)
        self.protocol = protocol
        self.solved_after: int | None = None
        self.checked = 0
        self._epoch, self._first_step = 0, 0

    def seen(self, epoch: int, step: int) -> int:
        """Training sequences seen after optimizer step ``step`` of epoch ``epoch``."""
        if epoch != self._epoch:
            self._epoch, self._first_step = epoch, step - 1
        n_train = self.protocol.n_train
        return (epoch - 1) * n_train + min((step - self._first_step) * self.protocol.batch_size, n_train)

    @torch.no_grad()
    def solved(self, model: torch.nn.Module) -> bool:
        """Whether ``model`` meets the criterion on every test and training string."""
        was_training = model.training
        model.eval()
        try:
            return all(hs_success(model(d.inputs, d.lengths), d.targets, d.lengths, d.weights) == 1.0
                       for d in self.sets)
        finally:
            model.train(was_training)

    def after_step(self, state: TrainState) -> None:
        seen = self.seen(state.epoch, state.step)
        if seen >= self.checked + self.protocol.check_every or seen >= self.protocol.budget:
            self.checked = seen - seen % self.protocol.check_every
            if self.solved(state.model):
                self.solved_after = seen
                state.stop(f"solved after {seen} sequences")
            elif seen >= self.protocol.budget:
                state.stop(f"budget of {self.protocol.budget} sequences spent")


def build_model(spec: TrialSpec, vocabulary_size: int, mask: torch.Tensor | None) -> torch.nn.Module:
    """A next-symbol model of the trial's cell and hidden size with hidden-to-hidden
    ``mask``, its weights seeded by the trial."""
    from rnn_models.masked import make_rnn
    from rnn_models.train import NextSymbolModel

    torch.manual_seed(spec.seed)
    rnn = make_rnn(spec.cell, vocabulary_size, spec.protocol.hidden_size, batch_first=True, hh_mask=mask)
    return NextSymbolModel(rnn, vocabulary_size)


def run_trial(spec: TrialSpec) -> Trial:
    """Train one network until it solves embedded Reber or spends the budget."""
    from rnn_models.train import TrainConfig, fit

    protocol = spec.protocol
    start = time.perf_counter()
    train, test = next_symbol_data("embedded", protocol.n_train, protocol.n_test, seed=spec.seed)
    mask = prior_mask(spec.prior, protocol.hidden_size, spec.seed)
    model = build_model(spec, len(train.vocabulary), mask)
    density = 1.0 if mask is None else float(mask.float().mean())
    check = SolvedCheck(train, test, protocol)
    config = TrainConfig(optimizer=protocol.optimizer, lr=protocol.lr, batch_size=protocol.batch_size,
                         epochs=math.ceil(protocol.budget / protocol.n_train), seed=spec.seed, bucket=False)
    fit(model, train, test, config, hooks=[check])
    solved = check.solved_after is not None
    return Trial(spec.model, spec.cell, spec.prior, spec.seed, solved,
                 float(check.solved_after) if solved else math.nan, density, time.perf_counter() - start)


def run_trials(specs: Sequence[TrialSpec]) -> list[Trial]:
    """Run several trials one after another (the unit of work of a worker process)."""
    return [run_trial(spec) for spec in specs]


# --------------------------------------------------------------------------- the benchmark

def trial_specs(cells: Sequence[str], priors: Sequence[str], trials: int, protocol: Protocol,
                first_seed: int = 0) -> list[TrialSpec]:
    """``trials`` trials of every cell and prior, interleaved (trial 0 of every model first),
    so an interrupted run still compares the models on equal terms."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    return [TrialSpec(cell, prior, first_seed + t, protocol)
            for t in range(trials) for cell in cells for prior in priors]


def run_benchmark(specs: Sequence[TrialSpec], workers: int | None = 1) -> Iterator[Trial]:
    """Yield each trial as it finishes, on ``workers`` processes (None: one per core). With
    one worker the trials run in this process, which is set to one torch thread: a model
    this small trains fastest so (worker processes get cores // workers threads)."""
    if workers == 1:
        set_torch_threads(1)
    executor = make_executor("serial" if workers == 1 else "local", workers=workers)
    for trials in executor.map_unordered(run_trials, [[spec] for spec in specs]):
        yield from trials


def trials_frame(trials: Sequence[Trial]) -> pd.DataFrame:
    """One row per trial."""
    return pd.DataFrame([asdict(t) for t in trials], columns=list(Trial.__dataclass_fields__))


def summary(trials: pd.DataFrame, published: bool = True) -> pd.DataFrame:
    """H&S's table: per model, trials, trials solved, mean and median training sequences
    of the solved trials; H&S's published LSTM row first when ``published``."""
    rows = []
    if published:
        rows.append({**PUBLISHED, "median_sequences": math.nan, "mask_density": 1.0})
    for model, group in trials.groupby("model", sort=False):
        solved = group.loc[group["solved"].astype(bool), "sequences"]
        rows.append({
            "model": model, "trials": len(group), "solved": int(len(solved)),
            "mean_sequences": float(solved.mean()) if len(solved) else math.nan,
            "median_sequences": float(np.median(solved)) if len(solved) else math.nan,
            "mask_density": float(group["density"].mean()),
        })
    return pd.DataFrame(rows, columns=["model", "trials", "solved", "mean_sequences", "median_sequences",
                                       "mask_density"])


def summary_markdown(table: pd.DataFrame) -> str:
    """The summary as a markdown table (sequences rounded to whole numbers)."""
    shown = table.copy()
    for column in ("mean_sequences", "median_sequences"):
        shown[column] = [("-" if math.isnan(v) else f"{v:,.0f}") for v in shown[column]]
    shown["mask_density"] = [f"{v:.2f}" for v in shown["mask_density"]]
    shown.columns = ["model", "trials", "solved", "mean sequences to solve", "median", "mask density"]
    return shown.to_markdown(index=False, disable_numparse=True)
