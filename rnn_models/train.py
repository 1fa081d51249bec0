"""Read-out heads and one training loop for sequence classification and next-symbol prediction.

``fit`` trains any model built from a recurrent module and a head on any data object with
the ``EncodedDataset`` tensor attributes (``task``, ``inputs``, ``lengths``, ``targets``,
``weights``; see docs/architecture.md). Tensors are moved to the device once; batches are
bucketed by length and trimmed to their longest sequence, so no time is spent on padding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

TASKS = ("classify", "next_symbol")
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
FUSED = ("adam", "adamw")
"""Optimizers ``TrainConfig.make_optimizer`` runs as torch's fused kernels where it can."""
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


class NextSymbolModel(nn.Module):
    """Logits over the vocabulary at every step: which symbols may come next."""

    def __init__(self, rnn: nn.Module, vocab_size: int, output_size: int | None = None) -> None:
        super().__init__()
        if getattr(rnn, "bidirectional", False):
            raise ValueError("rnn must be unidirectional: next-symbol prediction may not see the future")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.rnn = rnn
        self.readout = nn.Linear(output_size or _output_size(rnn), vocab_size)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.readout(sequence_output(self.rnn, inputs, lengths))


_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "optimizer": (str,), "lr": _NUMBER, "weight_decay": _NUMBER, "momentum": _NUMBER,
    "batch_size": (int,), "epochs": (int,), "clip": (*_NUMBER, type(None)),
    "patience": (int, type(None)), "seed": (int,), "device": (str, torch.device),
}
"""The types each ``TrainConfig`` field accepts (bools are refused for numbers)."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    ``clip`` is the maximal global gradient norm (None: no clipping). ``patience`` stops
    training after that many epochs without a lower test loss (None: run all epochs).
    ``bucket`` groups sequences of similar length into batches. ``momentum`` is used by
    sgd and rmsprop. ``seed`` seeds torch's global generators (dropout, batch order).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    batch_size: int = 128
    epochs: int = 15
    clip: float | None = None
    patience: int | None = None
    seed: int = 0
    device: str = "cpu"
    bucket: bool = True

    def __post_init__(self) -> None:
        for name, kinds in _FIELD_TYPES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kinds):
                allowed = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
                raise ValueError(f"{name} must be {allowed}, got {value!r}")
        checks = [
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {sorted(OPTIMIZERS)}"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("clip", self.clip is None or self.clip > 0, "None or > 0"),
            ("patience", self.patience is None or self.patience >= 1, "None or >= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")
        try:
            torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(
                f"device must be a torch device such as 'cpu' or 'cuda:0', got {self.device!r}"
            ) from error

    def make_optimizer(self, parameters: Any) -> torch.optim.Optimizer:
        """The configured optimizer over ``parameters`` (anything torch's optimizers take);
        torch's fused (one-kernel) Adam or AdamW when every parameter is a floating tensor on
        a device it supports (the same update, far fewer calls for models of many small
        tensors). SGD stays unfused: its fused kernel refuses sparse gradients."""
        parameters = list(parameters)
        kwargs: dict[str, Any] = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.optimizer in ("sgd", "rmsprop"):
            kwargs["momentum"] = self.momentum
        tensors = list(_tensors(parameters))
        if self.optimizer in FUSED and tensors and all(_fusable(p) for p in tensors):
            kwargs["fused"] = True
        return OPTIMIZERS[self.optimizer](parameters, **kwargs)


def _tensors(parameters: list[Any]) -> Iterator[torch.Tensor]:
    """The tensors of what torch's optimizers take: tensors, ``(name, tensor)`` pairs or
    parameter groups (dicts whose ``"params"`` is a tensor or an iterable of either)."""
    for item in parameters:
        if isinstance(item, dict):
            group = item["params"]
            yield from _tensors([group] if isinstance(group, torch.Tensor) else list(group))
        elif isinstance(item, tuple):
            yield item[1]
        else:
            yield item


def _fusable(parameter: torch.Tensor) -> bool:
    """Whether torch's fused optimizers take ``parameter``: a floating tensor on the CPU or a
    CUDA device (torch >= 2.4 has CPU kernels)."""
    return parameter.is_floating_point() and parameter.device.type in ("cpu", "cuda")


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
    return PreparedData(
        task=task,
        inputs=inputs.to(device, torch.float32),
        lengths=lengths.to(device, torch.int64),
        targets=targets.to(device, torch.float32),
        weights=None if weights is None else weights.to(device, torch.float32),
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
    Schmidhuber 1997). Steps with no allowed symbol have nothing to rank and are skipped."""
    if task == "classify":
        return float(((logits > 0) == (targets > 0.5)).float().mean())
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


def slice_batch(data: PreparedData, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One batch trimmed to its longest sequence: inputs, lengths, targets, weights
    (``index_select`` copies whole rows, several times faster than advanced indexing)."""
    index = index.to(data.lengths.device)
    lengths = data.lengths[index]
    steps = int(lengths.max())
    targets = data.targets[index] if data.task == "classify" else data.targets[:, :steps].index_select(0, index)
    weights = None if data.weights is None else data.weights[:, :steps].index_select(0, index)
    return data.inputs[:, :steps].index_select(0, index), lengths, targets, weights


@torch.no_grad()
def _predict(model: nn.Module, data: PreparedData, batch_size: int, bucket: bool) -> torch.Tensor:
    """Logits for the whole dataset in its original order (next_symbol: padded to full T)."""
    model.eval()
    if data.task == "classify":
        logits = torch.zeros(data.lengths.shape[0], device=data.inputs.device)
    else:
        logits = torch.zeros_like(data.targets)
    for index in batches(data.lengths, batch_size, bucket, None):
        inputs, lengths, _, _ = slice_batch(data, index)
        index = index.to(logits.device)
        out = model(inputs, lengths)
        if data.task == "classify":
            logits[index] = out
        else:
            logits[index, : out.shape[1]] = out
    return logits


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


def _train_epoch(model: nn.Module, data: PreparedData, optimizer: torch.optim.Optimizer,
                 config: TrainConfig, generator: torch.Generator) -> float:
    """One pass over the training data; returns the mean loss (NaN/inf as soon as one occurs)."""
    model.train()
    parameters = list(model.parameters())
    total, count = 0.0, 0
    for index in batches(data.lengths, config.batch_size, config.bucket, generator):
        inputs, lengths, targets, weights = slice_batch(data, index)
        optimizer.zero_grad(set_to_none=True)
        loss = task_loss(data.task, model(inputs, lengths), targets, lengths, weights)
        value = float(loss.detach())
        if not math.isfinite(value):
            return value
        loss.backward()
        if config.clip is not None:
            clip_gradients(parameters, config.clip)
        optimizer.step()
        total += value * len(index)
        count += len(index)
    return total / count


def prepare_pair(train: Any, test: Any, config: TrainConfig) -> tuple[PreparedData, PreparedData]:
    """Train and test data tensorized once on ``config.device``; they must share a task."""
    device = torch.device(config.device)
    train_data, test_data = prepare_data(train, "train", device), prepare_data(test, "test", device)
    if train_data.task != test_data.task:
        raise ValueError(f"train and test must share a task, got {train_data.task!r} and {test_data.task!r}")
    return train_data, test_data


def fit(model: nn.Module, train: Any, test: Any, config: TrainConfig,
        metrics: dict[str, Metric] | None = None) -> History:
    """Train ``model`` on ``train`` and evaluate it on ``test`` after every epoch.

    ``model(inputs, lengths)`` returns one logit per sequence (task ``classify``) or
    ``(B, T, V)`` logits (``next_symbol``). ``metrics`` maps names to callables
    ``(logits, targets, lengths) -> float`` called on the whole test set (logits in the
    dataset's order, padded to its full length) besides the built-in ``test_loss`` and
    ``test_acc``. A NaN/inf loss ends the run with status ``"failed"``.
    """
    start = time.perf_counter()
    device = torch.device(config.device)
    train_data, test_data = prepare_pair(train, test, config)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device)
    optimizer = config.make_optimizer(model.parameters())
    epochs: list[dict[str, float]] = []
    best, stale, status, reason = math.inf, 0, "done", ""
    for epoch in range(1, config.epochs + 1):
        train_loss = _train_epoch(model, train_data, optimizer, config, generator)
        if not math.isfinite(train_loss):
            status, reason = "failed", f"non-finite training loss ({train_loss}) in epoch {epoch}"
            break
        logits = _predict(model, test_data, config.batch_size, config.bucket)
        scores = score_logits(test_data, logits, metrics or {})
        epochs.append({"epoch": epoch, "train_loss": train_loss, **scores})
        if not math.isfinite(scores["test_loss"]):
            status, reason = "failed", f"non-finite test loss ({scores['test_loss']}) in epoch {epoch}"
            break
        best, stale = (scores["test_loss"], 0) if scores["test_loss"] < best else (best, stale + 1)
        if config.patience is not None and stale >= config.patience:
            reason = f"early stop after epoch {epoch}: no lower test loss for {stale} epochs"
            break
    final = dict(epochs[-1]) if epochs else {}
    return History(status, reason, epochs, final, time.perf_counter() - start)
