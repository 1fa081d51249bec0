"""Read-out heads and THE training loop for sequence classification and next-symbol prediction.

``fit`` trains any model built from a recurrent module and a head (or a list of them, one
by one or as one stack) on any data object with the ``EncodedDataset`` tensor attributes
(``task``, ``inputs``, ``lengths``, ``targets``, ``weights``; see docs/architecture.md).
Tensors are moved to the device once; batches are bucketed by length and trimmed to their
longest sequence, so no time is spent on padding; parallel streams are read window by
window with the state carried. Whatever happens at a point of training (re-masking,
pruning, sparse-training updates, measurements, stopping rules) is a ``Hook`` on this loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnn_models.config import TrainConfig
from rnn_models.engines import check_engine, choose_engine
from rnn_models.masked import Remask

TASKS = ("classify", "next_symbol")
Metric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float]


def _output_size(rnn: nn.Module) -> int:
    """Features per step of a recurrent module's output sequence."""
    if hasattr(rnn, "output_size"):
        return int(rnn.output_size)
    if isinstance(rnn, nn.RNNBase):
        return (rnn.proj_size or rnn.hidden_size) * (2 if rnn.bidirectional else 1)
    raise ValueError(f"cannot infer the output size of {type(rnn).__name__}: pass output_size")


def sequence_output(rnn: nn.Module, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run ``rnn`` on batch-first padded ``inputs``; return its ``(B, T, F)`` output sequence.

    A bidirectional module gets a PackedSequence, so its backward direction starts at each
    sequence's true end; unidirectional modules run padded (pads come after the valid steps
    and cannot change them), which keeps oneDNN's fast path.
    """
    batch_first = getattr(rnn, "batch_first", False)
    if getattr(rnn, "bidirectional", False):
        packed = pack_padded_sequence(inputs if batch_first else inputs.transpose(0, 1),
                                      lengths.cpu(), batch_first=batch_first, enforce_sorted=False)
        out, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=inputs.shape[1])
        return out
    if batch_first:
        return rnn(inputs)[0]
    return rnn(inputs.transpose(0, 1))[0].transpose(0, 1)


class SequenceClassifier(nn.Module):
    """One logit per sequence from the recurrent output at its true last step.

    The step is picked with ``gather`` at ``lengths - 1``, never at a pad position; for a
    bidirectional module the backward half is read at step 0, where it has seen the whole
    sequence.
    """

    def __init__(self, rnn: nn.Module, output_size: int | None = None) -> None:
        super().__init__()
        self.rnn = rnn
        self.readout = nn.Linear(output_size or _output_size(rnn), 1)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = sequence_output(self.rnn, inputs, lengths)
        index = (lengths.to(out.device) - 1).view(-1, 1, 1).expand(-1, 1, out.shape[2])
        last = out.gather(1, index).squeeze(1)
        if getattr(self.rnn, "bidirectional", False):
            # the backward direction has read the whole sequence at step 0, not at the end
            half = out.shape[2] // 2
            last = torch.cat([last[:, :half], out[:, 0, half:]], dim=1)
        return self.readout(last).squeeze(1)


def _detached(state: Any) -> Any:
    """A recurrent state (a tensor, or nested tuples of them) cut from the graph."""
    return tuple(_detached(s) for s in state) if isinstance(state, tuple) else state.detach()


def _zero_rows(state: Any, rows: torch.Tensor) -> Any:
    """A batched recurrent state (``(layers, B, H)`` tensors, or nested tuples of them)
    with the batch rows where ``rows`` (bool ``(B,)``) is True set to zero."""
    if isinstance(state, tuple):
        return tuple(_zero_rows(s, rows) for s in state)
    return state.masked_fill(rows.view(1, -1, 1), 0.0)


def reset_pieces(resets: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, end)`` steps of the pieces a window of ``resets`` (bool ``(B, T)``) is cut
    into: a new piece wherever some row resets, so a fused kernel runs each piece whole."""
    steps = resets.shape[1]
    cuts = sorted({0, *resets.any(0).nonzero().flatten().tolist()})
    return list(zip(cuts, cuts[1:] + [steps]))


class NextSymbolModel(nn.Module):
    """Logits over the vocabulary at every step: which symbols may come next.

    ``stateful=True`` (for stream data, ``EncodedDataset.streams``): each call starts from
    the final state of the previous call (detached: truncated backpropagation through
    time), so consecutive batches continue their streams row by row; ``reset_state()``
    (the training loop calls it at each epoch's and each evaluation's start) starts from
    zero again. Needs a torch recurrent module (masked or not) taking an initial state, or a
    ``LayeredRNN`` (its ``forward_state``, on torch's kernels). ``resets`` (bool ``(B, T)``,
    from the data's ``resets``; stateful only) zeroes a row's state before each flagged
    step: the window is run in pieces cut at the flagged steps (``reset_pieces``), since
    fused kernels cannot reset inside a sequence.
    """

    def __init__(self, rnn: nn.Module, vocab_size: int, output_size: int | None = None,
                 stateful: bool = False) -> None:
        super().__init__()
        if getattr(rnn, "bidirectional", False):
            raise ValueError("rnn must be unidirectional: next-symbol prediction may not see the future")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if stateful and not (isinstance(rnn, nn.RNNBase) or callable(getattr(rnn, "forward_state", None))):
            raise ValueError("stateful needs a torch.nn.RNN/LSTM/GRU (or masked) module or one with forward_state "
                             f"(LayeredRNN), got {type(rnn).__name__}")
        self.rnn = rnn
        self.readout = nn.Linear(output_size or _output_size(rnn), vocab_size)
        self.stateful = stateful
        self.state: Any = None

    def reset_state(self) -> None:
        """Start the next call from a zero state."""
        self.state = None

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, resets: torch.Tensor | None = None) -> torch.Tensor:
        if not self.stateful:
            if resets is not None:
                raise ValueError("resets need a model that carries its state: NextSymbolModel(..., stateful=True)")
            return self.readout(sequence_output(self.rnn, inputs, lengths))
        if resets is not None and tuple(resets.shape) != tuple(inputs.shape[:2]):
            raise ValueError(f"resets must have shape {tuple(inputs.shape[:2])}, got {tuple(resets.shape)}")
        time_dim = 1 if self.rnn.batch_first else 0
        if not self.rnn.batch_first:
            inputs = inputs.transpose(0, 1)
        step = getattr(self.rnn, "forward_state", self.rnn)  # LayeredRNN: all blocks' states
        state, outs = self.state, []
        for start, end in [(0, inputs.shape[time_dim])] if resets is None else reset_pieces(resets):
            if resets is not None and state is not None:
                state = _zero_rows(state, resets[:, start])
            out, state = step(inputs.narrow(time_dim, start, end - start), state)
            outs.append(out)
        self.state = _detached(state)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, time_dim)
        return self.readout(out if self.rnn.batch_first else out.transpose(0, 1))


@dataclass
class History:
    """Outcome of ``fit``: status ``"done"`` or ``"failed"`` (with ``reason``), one dict of
    metrics per epoch, the last epoch's metrics as ``final``, and wall-clock ``seconds``
    (left out of equality, so two runs with the same seed compare equal)."""

    status: str
    reason: str
    epochs: list[dict[str, float]]
    final: dict[str, float]
    seconds: float = field(compare=False)


@dataclass(frozen=True)
class PreparedData:
    """The tensors of a dataset on the training device (from ``prepare_data``)."""

    task: str
    inputs: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor | None
    streams: int | None = None
    resets: torch.Tensor | None = None


def prepare_data(data: Any, name: str, device: torch.device) -> PreparedData:
    """Check a dataset object's attributes and move its tensors to ``device`` once."""
    for attr in ("task", "inputs", "lengths", "targets"):
        if not hasattr(data, attr):
            raise ValueError(f"{name} must have the EncodedDataset attribute {attr!r}")
    task = data.task
    if task not in TASKS:
        raise ValueError(f"{name}.task must be one of {TASKS}, got {task!r}")
    inputs, lengths, targets = data.inputs, data.lengths, data.targets
    n, steps = inputs.shape[:2]
    if n == 0:
        raise ValueError(f"{name} must hold at least one sequence")
    if lengths.shape != (n,) or int(lengths.min()) < 1 or int(lengths.max()) > steps:
        raise ValueError(f"{name}.lengths must be ({n},) with values in 1..{steps}")
    expected = (n,) if task == "classify" else tuple(inputs.shape[:2]) + (targets.shape[-1],)
    if tuple(targets.shape) != expected:
        raise ValueError(
            f"{name}.targets must have shape {expected} for task {task!r}, got {tuple(targets.shape)}"
        )
    weights = getattr(data, "weights", None) if task == "next_symbol" else None
    if weights is not None and tuple(weights.shape) != (n, steps):
        raise ValueError(f"{name}.weights must have shape {(n, steps)}, got {tuple(weights.shape)}")
    streams = getattr(data, "streams", None)
    if streams is not None and (task != "next_symbol" or not isinstance(streams, int) or streams < 1
                                or n % streams or bool((lengths != steps).any())):
        raise ValueError(f"{name}.streams must divide the {n} rows of full-length next_symbol windows, got {streams!r}")
    resets = getattr(data, "resets", None)
    if resets is not None and (streams is None or tuple(resets.shape) != (n, steps)):
        raise ValueError(f"{name}.resets must be a bool ({n}, {steps}) tensor of stream data (with streams set)")
    return PreparedData(
        task=task,
        inputs=inputs.to(device, torch.float32),
        lengths=lengths.to(device, torch.int64),
        targets=targets.to(device, torch.float32),
        weights=None if weights is None else weights.to(device, torch.float32),
        streams=streams,
        resets=None if resets is None else resets.to(device, torch.bool),
    )



def _step_weights(lengths: torch.Tensor, steps: int, weights: torch.Tensor | None) -> torch.Tensor:
    """``(B, steps)`` weight of each step: 0 at pads, ``weights`` (or 1) at valid steps."""
    valid = (torch.arange(steps, device=lengths.device) < lengths.unsqueeze(1)).float()
    return valid if weights is None else valid * weights[:, :steps]


def task_loss(task: str, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of a batch: on the sequence logit (classify) or, averaged over
    the vocabulary, on every valid step weighted by ``weights`` (next_symbol)."""
    if task == "classify":
        return binary_cross_entropy_with_logits(logits, targets)
    steps = logits.shape[1]
    per_step = binary_cross_entropy_with_logits(logits, targets[:, :steps], reduction="none").mean(2)
    step_weights = _step_weights(lengths, steps, weights)
    return (per_step * step_weights).sum() / step_weights.sum().clamp_min(1e-12)


def task_accuracy(task: str, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                  weights: torch.Tensor | None = None) -> float:
    """Binary accuracy (classify), or the fraction of scored steps where every allowed next
    symbol gets a higher logit than every disallowed one (next_symbol; Hochreiter &
    Schmidhuber 1997). Steps with no allowed symbol have nothing to rank and are skipped.
    Both are exact count ratios in float64 (3089 of 6250 is 0.49424, not float32's
    0.49423998), so equal counts compare equal to other tools' accuracies."""
    if task == "classify":
        return int(((logits > 0) == (targets > 0.5)).sum()) / max(targets.numel(), 1)
    allowed = targets[:, : logits.shape[1]] > 0.5
    lowest_allowed = logits.masked_fill(~allowed, math.inf).amin(2)
    highest_other = logits.masked_fill(allowed, -math.inf).amax(2)
    scored = (_step_weights(lengths, logits.shape[1], weights) > 0) & allowed.any(2)
    correct = (lowest_allowed > highest_other) & scored
    return float(correct.sum()) / max(int(scored.sum()), 1)


def batches(lengths: torch.Tensor, batch_size: int, bucket: bool,
            generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index batches: shuffled when ``generator`` is given; with ``bucket``, sequences of
    similar length share a batch (ties broken at random) and batch order is shuffled."""
    n = lengths.shape[0]
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if bucket:
        order = order[torch.sort(lengths.cpu()[order], stable=True).indices]
    batches = list(order.split(batch_size))
    if bucket and generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return batches


def data_batches(data: PreparedData, batch_size: int, bucket: bool,
                 generator: torch.Generator | None) -> list[torch.Tensor]:
    """The batches of one pass over ``data``: ``batches`` for independent sequences; for
    parallel streams (``data.streams``) their consecutive windows in order, one batch of
    all streams per window (``batch_size`` and ``bucket`` do not apply)."""
    if data.streams is None:
        return batches(data.lengths, batch_size, bucket, generator)
    return list(torch.arange(data.lengths.shape[0]).split(data.streams))


def reset_states(model: nn.Module) -> None:
    """Zero the carried state of every stateful module in ``model`` (``reset_state``)."""
    for module in model.modules():
        if callable(getattr(module, "reset_state", None)):
            module.reset_state()


def batch_resets(data: PreparedData, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The keyword a batch of stream data with resets passes to the model (``{"resets":
    rows}``), none for other data: only stateful models take it."""
    return {} if data.resets is None else {"resets": data.resets.index_select(0, index.to(data.resets.device))}


def slice_batch(data: PreparedData, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One batch trimmed to its longest sequence: inputs, lengths, targets, weights
    (``index_select`` copies whole rows, several times faster than advanced indexing)."""
    index = index.to(data.lengths.device)
    lengths = data.lengths[index]
    steps = int(lengths.max())
    targets = data.targets[index] if data.task == "classify" else data.targets[:, :steps].index_select(0, index)
    weights = None if data.weights is None else data.weights[:, :steps].index_select(0, index)
    return data.inputs[:, :steps].index_select(0, index), lengths, targets, weights


def score_logits(data: PreparedData, logits: torch.Tensor, metrics: dict[str, Metric]) -> dict[str, float]:
    """One epoch's test scores of a model from its logits on the whole of ``data`` (in the
    dataset's order, next_symbol padded to full length): ``test_loss``, ``test_acc`` and
    every callable of ``metrics`` under its name."""
    args = (data.task, logits, data.targets, data.lengths, data.weights)
    result = {"test_loss": float(task_loss(*args)), "test_acc": task_accuracy(*args)}
    result.update({name: float(fn(logits, data.targets, data.lengths)) for name, fn in metrics.items()})
    return result


def clip_gradients(parameters: list[torch.Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_``'s rule (scale every gradient by ``max_norm / (norm +
    1e-6)`` when that is below 1, ``norm`` the 2-norm of all of them; a NaN norm spreads)
    with the norm taken once over the gradients laid end to end, and no multiplication when
    nothing needs clipping: several times cheaper for models of many small tensors. The
    gradients must be dense and on one device (as in ``fit``); the norm is read on the host."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norm = float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads])))
    scale = max_norm / (norm + 1e-6)
    if not scale >= 1.0:
        for grad in grads:
            grad.mul_(scale)


def prepare_pair(train: Any, test: Any, config: TrainConfig) -> tuple[PreparedData, PreparedData]:
    """Train and test data tensorized once on ``config.device``; they must share a task."""
    device = torch.device(config.device)
    train_data, test_data = prepare_data(train, "train", device), prepare_data(test, "test", device)
    if train_data.task != test_data.task:
        raise ValueError(f"train and test must share a task, got {train_data.task!r} and {test_data.task!r}")
    return train_data, test_data



# ---------------------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------------------

EVENTS = ("on_train_begin", "before_batch", "before_step", "after_step", "on_epoch_end", "on_train_end")
"""The points of ``fit``'s loop where hooks are called, in the order they first occur."""


class Hook:
    """A training-loop hook: ``fit(..., hooks=[...])`` calls each of these methods a hook
    has, with the loop's ``TrainState``. Subclass and override what you need (every method
    here does nothing), or pass any object with some of them (``EVENTS``).

    * ``on_train_begin``: once, before the first batch;
    * ``before_batch``: before each batch's forward pass (e.g. to put the weights the
      forward pass should use in place);
    * ``before_step``: after the backward pass and gradient clipping, before the optimizer
      step (the gradients are in the parameters' ``.grad``);
    * ``after_step``: after the optimizer step (and after the masks are re-applied);
    * ``on_epoch_end``: after the epoch's evaluation (``state.scores``), before it is
      recorded; values given to ``state.record`` join that epoch's history entry;
    * ``on_train_end``: once, after every model has ended and holds its final weights.
    """

    def on_train_begin(self, state: "TrainState") -> None:
        """Called once, before the first batch."""

    def before_batch(self, state: "TrainState") -> None:
        """Called before each batch's forward pass."""

    def before_step(self, state: "TrainState") -> None:
        """Called after backward and clipping, before ``optimizer.step()``."""

    def after_step(self, state: "TrainState") -> None:
        """Called after ``optimizer.step()``."""

    def on_epoch_end(self, state: "TrainState") -> None:
        """Called after each epoch's evaluation, before the epoch is recorded."""

    def on_train_end(self, state: "TrainState") -> None:
        """Called once at the end."""


@dataclass
class TrainState:
    """What a hook sees: the models ``fit`` was given (``models``), the module being trained
    (``model``: the model itself, or, for K models trained together, the stack that holds
    their weights until they end), the optimizer, the config, the epoch (from 1) and the number of optimizer
    steps so far, which models are still training (``active``), each model's test scores
    of the epoch just evaluated (``scores``, ``on_epoch_end`` only) and the batch losses of
    the latest step (``losses``). ``record`` and ``stop`` are how a hook acts on the run."""

    models: list[nn.Module]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    epoch: int = 0
    step: int = 0
    active: list[bool] = field(default_factory=list)
    scores: list[dict[str, float] | None] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    _reserved: frozenset[str] = field(default=frozenset(), repr=False)  # the loop's own columns
    _pending: list[dict[str, float]] = field(default_factory=list, repr=False)  # records of this epoch
    _stops: dict[int, str] = field(default_factory=dict, repr=False)  # models to stop, with reasons

    def _targets(self, model: int | None) -> list[int]:
        if model is None:
            return [k for k, on in enumerate(self.active) if on]
        if not 0 <= model < len(self.models):
            raise ValueError(f"model must be in 0..{len(self.models) - 1} or None, got {model}")
        return [model]

    def record(self, name: str, value: float, model: int | None = None) -> None:
        """Add ``name: value`` to the current epoch's history entry of model ``model``
        (default: every active model); the store keeps it with the run's history."""
        if name in self._reserved:
            raise ValueError(f"name {name!r} is one of the loop's own columns {sorted(self._reserved)}: pick another")
        for k in self._targets(model):
            self._pending[k][name] = float(value)

    def stop(self, reason: str, model: int | None = None) -> None:
        """End the training of model ``model`` (default: all) after the current step or
        epoch, with status ``"done"`` and ``reason``; its epoch is still evaluated."""
        for k in self._targets(model):
            self._stops.setdefault(k, reason)


def _hook_calls(hooks: Sequence[Any]) -> dict[str, list[Callable[[TrainState], None]]]:
    """The bound hook methods of every event, in hook order; a hook with none is an error."""
    for position, hook in enumerate(hooks):
        if not any(callable(getattr(hook, event, None)) for event in EVENTS):
            raise ValueError(f"hooks[{position}] ({type(hook).__name__}) has none of the hook methods {EVENTS}")
    return {event: [getattr(h, event) for h in hooks if callable(getattr(h, event, None))] for event in EVENTS}


# ---------------------------------------------------------------------------------------
# the training loop
# ---------------------------------------------------------------------------------------


class Solo:
    """One model as a stack of one: what ``fit`` trains when models train one at a time.
    (``rnn_models.ensemble.EnsembleModel`` is the stack of K; both give the loop per-model
    losses, logits, clipping, per-step upkeep and retirement.)"""

    num_models = 1

    def __init__(self, model: nn.Module) -> None:
        self.module = model
        self.parameters = list(model.parameters())

    def losses(self, task: str, inputs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
               weights: torch.Tensor | None, **resets: torch.Tensor) -> torch.Tensor:
        return task_loss(task, self.module(inputs, lengths, **resets), targets, lengths, weights).unsqueeze(0)

    def logits(self, inputs: torch.Tensor, lengths: torch.Tensor, **resets: torch.Tensor) -> torch.Tensor:
        return self.module(inputs, lengths, **resets).unsqueeze(0)

    def clip(self, max_norm: float) -> None:
        clip_gradients(self.parameters, max_norm)

    def after_step(self, active: list[bool]) -> None:
        """Nothing to do: the model's masks are re-applied by the ``Remask`` hook."""

    def retire(self, models: Sequence[int]) -> None:
        """Nothing to do: the model trains in place."""


@torch.no_grad()
def _predict(stack: Any, data: PreparedData, batch_size: int, bucket: bool) -> torch.Tensor:
    """``(K, ...)`` logits of every model of ``stack`` for the whole dataset in its original
    order (next_symbol: padded to full T)."""
    stack.module.eval()
    reset_states(stack.module)
    rows = (data.lengths.shape[0],) if data.task == "classify" else tuple(data.targets.shape)
    logits = torch.zeros((stack.num_models,) + rows, device=data.inputs.device)
    for index in data_batches(data, batch_size, bucket, None):
        inputs, lengths, _, _ = slice_batch(data, index)
        out = stack.logits(inputs, lengths, **batch_resets(data, index))
        index = index.to(logits.device)
        if data.task == "classify":
            logits[:, index] = out
        else:
            logits[:, index, : out.shape[2]] = out
    return logits


@dataclass
class _Run:
    """What the loop tracks for one model."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best: float = math.inf
    stale: int = 0
    status: str = "done"
    reason: str = ""
    seconds: float = math.nan

    def history(self) -> History:
        return History(self.status, self.reason, self.epochs, dict(self.epochs[-1]) if self.epochs else {},
                       self.seconds)


class _Loop:
    """One run of ``fit``'s loop over a stack of K >= 1 models (see ``fit``)."""

    def __init__(self, stack: Any, models: list[nn.Module], data: tuple[PreparedData, PreparedData],
                 config: TrainConfig, metrics: dict[str, Metric], hooks: Sequence[Any], start: float) -> None:
        self.stack, self.models, self.config, self.metrics = stack, models, config, metrics
        self.train_data, self.test_data = data
        self.start = start
        k = stack.num_models
        self.runs = [_Run() for _ in range(k)]
        self.live: torch.Tensor | None = None  # indices of the active models once some ended
        self.hooks = _hook_calls([Remask(stack.module), *hooks])  # masks' upkeep is a hook like any other
        optimizer = config.make_optimizer(stack.module.parameters())
        reserved = frozenset({"epoch", "train_loss", "test_loss", "test_acc", *metrics})
        self.state = TrainState(models, stack.module, optimizer, config, active=[True] * k, scores=[None] * k,
                                _reserved=reserved, _pending=[{} for _ in range(k)])

    def call(self, event: str) -> None:
        for hook in self.hooks[event]:
            hook(self.state)

    def retire(self, which: Sequence[int], status: str, reasons: dict[int, str]) -> None:
        """End the runs of ``which``: their weights go back to their models."""
        if not which:
            return
        self.stack.retire(which)
        seconds = (time.perf_counter() - self.start) / len(self.runs)
        for k in which:
            self.state.active[k] = False
            run = self.runs[k]
            run.status, run.reason, run.seconds = status, reasons[k], seconds
        on = [k for k, active in enumerate(self.state.active) if active]
        device = self.train_data.inputs.device
        self.live = torch.tensor(on, dtype=torch.long, device=device)

    def step(self, batch: tuple[torch.Tensor, ...], epoch: int, totals: list[float], seen: list[int],
             resets: dict[str, torch.Tensor] | None = None) -> None:
        """One optimizer step on one batch for every active model. A model whose loss is not
        finite fails and leaves the stack (its slice is zeroed), and the batch is run again
        without it: no arithmetic mixes models, so the others' step is what it is alone."""
        state, stack = self.state, self.stack
        inputs, lengths, targets, weights = batch
        self.call("before_batch")
        while True:
            state.optimizer.zero_grad(set_to_none=True)
            losses = stack.losses(self.train_data.task, inputs, lengths, targets, weights, **(resets or {}))
            values = losses.detach().tolist()
            bad = [k for k, v in enumerate(values) if state.active[k] and not math.isfinite(v)]
            if not bad:
                break
            self.retire(bad, "failed", {k: f"non-finite training loss ({values[k]}) in epoch {epoch}" for k in bad})
            if not any(state.active):
                return
        (losses if self.live is None else losses.index_select(0, self.live)).sum().backward()
        if self.config.clip is not None:
            stack.clip(self.config.clip)
        state.losses = values
        self.call("before_step")
        state.optimizer.step()
        stack.after_step(state.active)
        state.step += 1
        for k, active in enumerate(state.active):
            if active:
                totals[k] += values[k] * len(inputs)
                seen[k] += len(inputs)
        self.call("after_step")

    def epoch(self, epoch: int, generator: torch.Generator) -> None:
        """Train one epoch, evaluate, let the hooks see it, record it. A model a hook stops
        during the epoch leaves the stack at once and is evaluated with the others."""
        state = self.state
        state.epoch = epoch
        self.stack.module.train()
        reset_states(self.stack.module)
        reported = [k for k, active in enumerate(state.active) if active]
        totals, seen, left = [0.0] * len(self.runs), [0] * len(self.runs), []
        for index in data_batches(self.train_data, self.config.batch_size, self.config.bucket, generator):
            self.step(slice_batch(self.train_data, index), epoch, totals, seen, batch_resets(self.train_data, index))
            stopping = [k for k in state._stops if state.active[k]]
            self.retire(stopping, "done", state._stops)
            left += stopping
            if not any(state.active):
                break
        reported = [k for k in reported if self.runs[k].status == "done"]
        if reported:
            self.evaluate(reported, left)
            self.call("on_epoch_end")
            self.record(epoch, reported, [t / max(n, 1) for t, n in zip(totals, seen)])
        state._stops.clear()

    def evaluate(self, reported: list[int], left: list[int]) -> None:
        """Test scores of the reported models: the stack's for those still in it, their own
        module's for those that just left it."""
        config, state = self.config, self.state
        logits = _predict(self.stack, self.test_data, config.batch_size, config.bucket)
        for k in reported:
            own = logits[k] if k not in left or self.stack.num_models == 1 else \
                _predict(Solo(self.models[k]), self.test_data, config.batch_size, config.bucket)[0]
            state.scores[k] = score_logits(self.test_data, own, self.metrics)

    def record(self, epoch: int, reported: list[int], train_losses: list[float]) -> None:
        """Append the epoch to every reported run; end those that failed, stop early or
        were stopped by a hook."""
        state, patience = self.state, self.config.patience
        failed, stopped, reasons = [], [], {}
        for k in reported:
            run, scores = self.runs[k], state.scores[k]
            run.epochs.append({"epoch": epoch, "train_loss": train_losses[k], **scores, **state._pending[k]})
            state._pending[k] = {}
            if not state.active[k]:
                continue
            test_loss = scores["test_loss"]
            if not math.isfinite(test_loss):
                failed.append(k)
                reasons[k] = f"non-finite test loss ({test_loss}) in epoch {epoch}"
                continue
            run.best, run.stale = (test_loss, 0) if test_loss < run.best else (run.best, run.stale + 1)
            if k in state._stops:
                stopped.append(k)
                reasons[k] = state._stops[k]
            elif patience is not None and run.stale >= patience:
                stopped.append(k)
                reasons[k] = f"early stop after epoch {epoch}: no lower test loss for {run.stale} epochs"
        self.retire(failed, "failed", reasons)
        self.retire(stopped, "done", reasons)
        state.scores = [None] * len(self.runs)

    def run(self) -> list[History]:
        torch.manual_seed(self.config.seed)
        generator = torch.Generator().manual_seed(self.config.seed)
        self.call("on_train_begin")
        for epoch in range(1, self.config.epochs + 1):
            if not any(self.state.active):
                break
            self.epoch(epoch, generator)
        still = [k for k, active in enumerate(self.state.active) if active]
        self.retire(still, "done", {k: "" for k in still})
        self.call("on_train_end")
        return [run.history() for run in self.runs]


def _check_streams(models: Sequence[nn.Module], data: PreparedData) -> None:
    """Stream data needs stateful models (else every window would start from zero)."""
    stateless = [k for k, m in enumerate(models) if not getattr(m, "stateful", False)]
    if data.streams is not None and stateless:
        raise ValueError(f"train holds {data.streams} parallel streams: model {stateless[0]} must carry its state "
                         "(NextSymbolModel(..., stateful=True))")


def predict(model: nn.Module, data: Any, batch_size: int = 128, device: str = "cpu") -> torch.Tensor:
    """``model``'s logits for the whole of ``data`` (an ``EncodedDataset``-like object), in
    its order (next_symbol: padded to full length); streams run unbroken from a zero state."""
    prepared = prepare_data(data, "data", torch.device(device))
    model.to(device)
    return _predict(Solo(model), prepared, batch_size, bucket=True)[0]


def fit(model: nn.Module | Sequence[nn.Module], train: Any, test: Any, config: TrainConfig,
        metrics: dict[str, Metric] | None = None, hooks: Sequence[Any] = (),
        engine: str = "auto") -> History | list[History]:
    """Train ``model`` (or each model of a sequence) on ``train``, evaluating it on ``test``
    after every epoch; return its ``History`` (a list of them for a sequence).

    ``model(inputs, lengths)`` returns one logit per sequence (task ``classify``) or
    ``(B, T, V)`` logits (``next_symbol``); stream data with ``resets`` (``reber.tasks.
    stream_data(..., resets=True)``) is read as ``model(inputs, lengths, resets=rows)``.
    ``metrics`` maps names to callables
    ``(logits, targets, lengths) -> float`` called on the whole test set (logits in the
    dataset's order, padded to its full length) besides the built-in ``test_loss`` and
    ``test_acc``. A NaN/inf loss ends a model's run with status ``"failed"``; ``patience``
    (in ``config``) and ``TrainState.stop`` end it with ``"done"`` and a reason.

    ``hooks`` are called at the loop's points (``Hook``, ``EVENTS``); the masks of masked
    modules are re-applied after every optimizer step by the ``rnn_models.masked.Remask``
    hook, which always runs first.

    K models share ``config`` (so the batch order too). ``engine`` says how they train:
    ``"separate"`` one after another, ``"batched"`` together as one stack
    (``rnn_models.ensemble``: each model keeps its own loss, optimizer state, clipping,
    early stopping and failure; the results equal separate runs to float tolerance), and
    ``"auto"`` applies ``rnn_models.engines.choose_engine``. In a stack a model's own
    object gets its weights when it ends (hooks see them in ``TrainState.model``), and
    each ``History.seconds`` is the stack's time until that model ended, divided by K.
    """
    start = time.perf_counter()
    single = isinstance(model, nn.Module)
    models = [model] if single else list(model)
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise ValueError("model must be a torch module or a non-empty sequence of them")
    check_engine("stack", engine)
    hooks = list(hooks)
    _hook_calls(hooks)  # a hook that is none fails before any work
    train_data, test_data = prepare_pair(train, test, config)
    _check_streams(models, train_data)
    device = torch.device(config.device)
    for m in models:
        m.to(device)
    if engine == "auto":
        from rnn_models.ensemble import stackable  # rnn_models.ensemble builds on this module

        engine = "separate" if not stackable(models) else choose_engine(
            "stack", device, num_models=len(models), hidden_size=models[0].rnn.hidden_size,
            batch_size=config.batch_size)
    metrics = metrics or {}
    if engine == "batched":
        from rnn_models.ensemble import EnsembleModel

        histories = _Loop(EnsembleModel(models).to(device), models, (train_data, test_data), config, metrics,
                          hooks, start).run()
    else:
        histories = []
        for m in models:
            histories += _Loop(Solo(m), [m], (train_data, test_data), config, metrics, hooks, start).run()
            start = time.perf_counter()
    return histories[0] if single else histories
