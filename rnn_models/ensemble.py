"""Train K masked recurrent models at once, with the results of K separate ``fit`` runs.

A sweep trains hundreds of small networks. ``fit_ensemble`` trains K models of one cell
type and size (different masks, different initial weights) on the same batches as one
computation. Each model keeps its own loss, optimizer state, gradient-norm clipping, early
stopping, failure status and metrics; the trained weights are written back into the K
model objects, exactly as ``fit`` leaves them.

Parameters live in a *compact* layout with the model axis first (``(K, G*H, in)``), so
element-wise optimizers (Adam, AdamW, SGD, RMSprop) update every model independently and
whole-model statistics (gradient norms) are reductions over the non-model axes. The
recurrence runs in one of two ways:

* ``"fused"``: one torch recurrent kernel (oneDNN / cuDNN) of hidden size K*H whose
  weights are assembled block-diagonally from the compact ones on every forward; it does
  K times the arithmetic.
* ``"batched"``: ``rnn_models.batched.batched_recurrence``, a time loop of batched
  matrix products over the model axis with hand-written backpropagation through time; no
  wasted arithmetic, more calls per step.

Whether training together pays depends on size: on a CPU it does for several small models
on small batches, where each model's own kernels are call-bound; with batches of 128 the
per-model fused kernel is already efficient. ``"auto"`` (``choose_strategy``) follows the
measurements in docs/bench/ensemble.md and falls back to ``"separate"`` (plain ``fit`` per
model) where an ensemble would be slower.

Divergence: in a block-diagonal product ``0 * NaN = NaN`` leaks across blocks, so a model
whose loss turns non-finite is *retired* before anything else happens: its weights are
written back to its model object, its compact slice is zeroed by assignment (which,
unlike a multiplication, also clears NaN) and the batch is run again without it. With
``"fused"`` the culprits are first told apart from the victims by re-running the batch with
``"batched"``, which has no cross-model arithmetic.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rnn_models.batched import batched_recurrence
from rnn_models.masked import GATES
from rnn_models.train import (
    History,
    Metric,
    NextSymbolModel,
    PreparedData,
    SequenceClassifier,
    TrainConfig,
    batches,
    fit,
    prepare_pair,
    score_logits,
    slice_batch,
    task_loss,
)

STRATEGIES = ("auto", "separate", "fused", "batched")
"""How ``fit_ensemble`` trains: ``"separate"`` calls ``fit`` per model; ``"fused"`` and
``"batched"`` are ``EnsembleRNN``'s two forwards; ``"auto"`` applies ``choose_strategy``."""
ENSEMBLE_MIN_MODELS = 16
ENSEMBLE_MAX_HIDDEN = 64
ENSEMBLE_MAX_BATCH = 32

_FORWARDS = ("fused", "batched")
_TORCH_MODULES = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def choose_strategy(num_models: int, hidden_size: int, batch_size: int) -> str:
    """What ``"auto"`` resolves to, from the measurements in docs/bench/ensemble.md (CPU).

    Training together pays only where a model's own kernels are call-bound: many
    (>= ``ENSEMBLE_MIN_MODELS``) small models (H <= ``ENSEMBLE_MAX_HIDDEN``) on small
    batches (<= ``ENSEMBLE_MAX_BATCH``); there ``"batched"`` wins (1.2-2.7x measured).
    Elsewhere the gain is small or negative (1.2-1.3x for K=32, H=32 at batch 128, within
    the noise of a shared machine; below 1x for K < 16 or H = 128) and ``"separate"`` is
    kept. ``"fused"`` (block-diagonal, K times the arithmetic) wins only for a few small
    models and is kept for accelerators and comparison.
    """
    many = num_models >= ENSEMBLE_MIN_MODELS
    small = hidden_size <= ENSEMBLE_MAX_HIDDEN and batch_size <= ENSEMBLE_MAX_BATCH
    return "batched" if many and small else "separate"


def _cell_of(rnn: nn.Module) -> str:
    """Cell name (a key of ``GATES``) of a torch recurrent module."""
    if not isinstance(rnn, nn.RNNBase):
        raise ValueError(f"rnn must be a torch.nn.RNN/LSTM/GRU (or masked) module, got {type(rnn).__name__}")
    return rnn.mode.lower()


def _check_compatible(rnns: Sequence[nn.Module]) -> None:
    """Raise ValueError unless all modules share cell type and shape and can be packed."""
    if len(rnns) < 1:
        raise ValueError("rnns must hold at least one recurrent module")
    first = rnns[0]
    signature = (_cell_of(first), first.input_size, first.hidden_size, first.num_layers, first.bias)
    for position, rnn in enumerate(rnns):
        if rnn.bidirectional or rnn.proj_size:
            raise ValueError(f"rnns[{position}] must be unidirectional without proj_size")
        if rnn.dropout and rnn.num_layers > 1:
            raise ValueError(f"rnns[{position}] must have dropout 0: random streams cannot be shared")
        found = (_cell_of(rnn), rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bias)
        if found != signature:
            raise ValueError(
                f"rnns[{position}] has (cell, input_size, hidden_size, num_layers, bias) = {found}, "
                f"but rnns[0] has {signature}: an ensemble needs them equal"
            )


def _packable(models: Sequence[nn.Module]) -> bool:
    """Whether models can train as one ensemble (else ``"auto"`` trains them one by one)."""
    if not all(type(m) in _HEADS and isinstance(m.rnn, nn.RNNBase) for m in models):
        return False
    try:
        _check_compatible([m.rnn for m in models])
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=16)
def _weightless_module(cell: str, input_size: int, hidden_size: int, num_layers: int, bias: bool) -> nn.RNNBase:
    """A meta-device torch recurrent module (no weight memory) to call with fused weights."""
    kwargs: dict[str, Any] = {"num_layers": num_layers, "batch_first": True, "bias": bias}
    if cell.startswith("rnn_"):
        kwargs["nonlinearity"] = cell[4:]
    with torch.device("meta"):
        return _TORCH_MODULES[cell](input_size, hidden_size, **kwargs)


class EnsembleRNN(nn.Module):
    """K unidirectional recurrent modules of one cell type and size, run as one module.

    Built from K (masked) ``torch.nn.RNN/LSTM/GRU`` modules, whose weights and masks it
    copies into compact ``(K, ...)`` parameters and buffers of the same names
    (``weight_hh_l0`` of shape ``(K, G*H, H)``, ``weight_hh_l0_mask``, ...). ``forward``
    takes one batch-first input shared by all models and returns ``(K, B, T, H)``.
    """

    def __init__(self, rnns: Sequence[nn.RNNBase], strategy: str = "batched") -> None:
        super().__init__()
        _check_compatible(rnns)
        if strategy not in _FORWARDS:
            raise ValueError(f"strategy must be one of {_FORWARDS}, got {strategy!r}")
        first = rnns[0]
        self.cell = _cell_of(first)
        self.num_models, self.hidden_size = len(rnns), first.hidden_size
        self.input_size, self.num_layers, self.gates = first.input_size, first.num_layers, GATES[self.cell]
        self.strategy = strategy
        self.weight_names = list(first._flat_weights_names)
        for name in self.weight_names:
            stacked = torch.stack([getattr(r, name).detach() for r in rnns])
            self.register_parameter(name, nn.Parameter(stacked.clone()))
            if name.startswith("weight_"):
                masks = [getattr(r, "masks", {}).get(name) for r in rnns]
                full = torch.stack([torch.ones_like(getattr(r, name), dtype=torch.bool) if m is None else m
                                    for r, m in zip(rnns, masks)])
                self.register_buffer(name + "_mask", full)

    def forward(self, inputs: torch.Tensor, strategy: str | None = None) -> torch.Tensor:
        """Outputs ``(K, B, T, H)`` of every model for batch-first ``inputs`` ``(B, T, in)``,
        computed with ``strategy`` (default: the module's own)."""
        if inputs.dim() != 3 or inputs.shape[2] != self.input_size:
            raise ValueError(f"inputs must be (batch, time, {self.input_size}), got {tuple(inputs.shape)}")
        if (strategy or self.strategy) == "fused":
            return self._forward_fused(inputs)
        return self._forward_batched(inputs)

    # -- fused: one kernel of hidden size K*H with block-diagonal weights -----------------

    def _forward_fused(self, inputs: torch.Tensor) -> torch.Tensor:
        template = _weightless_module(self.cell, self.input_size, self.num_models * self.hidden_size,
                                      self.num_layers, "bias_ih_l0" in self.weight_names)
        fused = {name: self._fuse(name) for name in self.weight_names}
        out = torch.func.functional_call(template, fused, (inputs,))[0]
        batch, steps = out.shape[:2]
        return out.view(batch, steps, self.num_models, self.hidden_size).permute(2, 0, 1, 3)

    def _fuse(self, name: str) -> torch.Tensor:
        """The K*H-unit weight (or bias) of ``name``: gate blocks of all models stacked, and
        block-diagonal columns where a model's input is its own previous layer."""
        compact = getattr(self, name)
        k, g, h = self.num_models, self.gates, self.hidden_size
        rows = compact.view(k, g, h, -1).transpose(0, 1)  # (G, K, H, in)
        if name.startswith("bias"):
            return rows.reshape(g * k * h)
        if name == "weight_ih_l0":  # every model reads the same input
            return rows.reshape(g * k * h, -1)
        cols = rows.shape[-1]
        eye = torch.eye(k, dtype=compact.dtype, device=compact.device)
        return torch.einsum("gkhc,kl->gkhlc", rows, eye).reshape(g * k * h, k * cols)

    # -- batched: a time loop of batched matrix products over the model axis -------------

    def _forward_batched(self, inputs: torch.Tensor) -> torch.Tensor:
        layer_input = inputs
        for layer in range(self.num_layers):
            layer_input = self._batched_layer(layer, layer_input)
        return layer_input

    def _batched_layer(self, layer: int, inputs: torch.Tensor) -> torch.Tensor:
        """One layer for all models; ``inputs`` is ``(B, T, in)`` (shared) or ``(K, B, T, in)``."""
        if inputs.dim() == 3:  # layer 0: every model reads the same input
            inputs = inputs.unsqueeze(0).expand(self.num_models, -1, -1, -1)
        return batched_recurrence(
            self.cell, inputs, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}"),
            getattr(self, f"bias_ih_l{layer}", None), getattr(self, f"bias_hh_l{layer}", None))

    # -- per-model bookkeeping -----------------------------------------------------------

    def apply_masks(self) -> None:
        """Zero every masked weight (``masked_fill`` also clears NaN)."""
        with torch.no_grad():
            for name in self.weight_names:
                mask = self._buffers.get(name + "_mask")
                if mask is not None:
                    getattr(self, name).masked_fill_(~mask, 0.0)

    def mask_gradients(self) -> None:
        """Zero the gradients of masked weights, as the masked modules' gradient hooks do."""
        for name in self.weight_names:
            param, mask = getattr(self, name), self._buffers.get(name + "_mask")
            if mask is not None and param.grad is not None:
                param.grad.masked_fill_(~mask, 0.0)

    def load_into(self, rnns: Sequence[nn.RNNBase], models: Sequence[int] | None = None) -> None:
        """Copy the compact weights of ``models`` (default: all) into their own modules."""
        for k in range(self.num_models) if models is None else models:
            with torch.no_grad():
                for name in self.weight_names:
                    getattr(rnns[k], name).copy_(getattr(self, name)[k])


_HEADS = (SequenceClassifier, NextSymbolModel)


class EnsembleModel(nn.Module):
    """K ``SequenceClassifier`` or K ``NextSymbolModel`` (all of one kind) as one module.

    ``forward(inputs, lengths)`` returns ``(K, B)`` sequence logits or ``(K, B, T, V)``
    step logits: model k's slice equals what model k alone returns.
    """

    def __init__(self, models: Sequence[nn.Module], strategy: str = "batched") -> None:
        super().__init__()
        if len(models) < 1:
            raise ValueError("models must hold at least one model")
        kind = type(models[0])
        if kind not in _HEADS or any(type(m) is not kind for m in models):
            raise ValueError(
                "models must all be SequenceClassifier or all NextSymbolModel, got "
                f"{sorted({type(m).__name__ for m in models})}"
            )
        self.classify = kind is SequenceClassifier
        self.rnn = EnsembleRNN([m.rnn for m in models], strategy)
        self.readout_weight = nn.Parameter(torch.stack([m.readout.weight.detach() for m in models]).clone())
        self.readout_bias = nn.Parameter(torch.stack([m.readout.bias.detach() for m in models]).clone())

    @property
    def num_models(self) -> int:
        return self.rnn.num_models

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, strategy: str | None = None) -> torch.Tensor:
        out = self.rnn(inputs, strategy)  # (K, B, T, H)
        if self.classify:
            index = (lengths.to(out.device) - 1).view(1, -1, 1, 1).expand(out.shape[0], -1, 1, out.shape[3])
            last = out.gather(2, index).squeeze(2)
            return (torch.einsum("kbh,koh->kbo", last, self.readout_weight)
                    + self.readout_bias.unsqueeze(1)).squeeze(2)
        return self._step_readout(out)

    def _step_readout(self, out: torch.Tensor) -> torch.Tensor:
        """``(K, B, T, V)`` logits of ``(K, B, T, H)`` outputs: batched products over
        ``(T, K)``, whose ``(T, K, B, H)`` operand is ``batched_recurrence``'s own layout
        (a view, no copy)."""
        logits = torch.matmul(out.permute(2, 0, 1, 3), self.readout_weight.transpose(1, 2))
        return (logits + self.readout_bias.unsqueeze(1)).permute(1, 2, 0, 3)

    def after_step(self, active: torch.Tensor) -> None:
        """Re-zero masked weights and the slices of models no longer trained."""
        self.rnn.apply_masks()
        self.zero_models(~active)

    def zero_models(self, which: torch.Tensor) -> None:
        """Set every parameter of the models flagged in ``which`` (bool ``(K,)``) to 0, NaN too."""
        with torch.no_grad():
            for param in self.parameters():
                param[which] = 0.0

    def grad_norms(self) -> torch.Tensor:
        """``(K,)`` gradient norm of each model over all its parameters."""
        squares = [p.grad.flatten(1).square().sum(1) for p in self.parameters() if p.grad is not None]
        return torch.stack(squares).sum(0).sqrt()

    def clip_grad_norms(self, max_norm: float) -> torch.Tensor:
        """Per-model ``torch.nn.utils.clip_grad_norm_``: scale each model's gradients so
        that its own norm is at most ``max_norm``; returns the norms before clipping."""
        norms = self.grad_norms()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for param in self.parameters():
            if param.grad is not None:
                param.grad.mul_(scale.view(-1, *([1] * (param.dim() - 1))))
        return norms

    def load_into(self, models: Sequence[nn.Module], which: Sequence[int]) -> None:
        """Write the weights of the models numbered in ``which`` back into their own objects."""
        self.rnn.load_into([m.rnn for m in models], which)
        with torch.no_grad():
            for k in which:
                models[k].readout.weight.copy_(self.readout_weight[k])
                models[k].readout.bias.copy_(self.readout_bias[k])


@dataclass
class _Run:
    """What ``fit`` tracks for one model, kept per ensemble member."""

    epochs: list[dict[str, float]]
    best: float = math.inf
    stale: int = 0
    status: str = "done"
    reason: str = ""
    seconds: float = math.nan


def per_model_losses(task: str, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                     weights: torch.Tensor | None) -> torch.Tensor:
    """``(K,)`` losses: ``rnn_models.train.task_loss`` of every model's logits, vectorised."""
    return torch.func.vmap(lambda one: task_loss(task, one, targets, lengths, weights))(logits)


class _EnsembleTrainer:
    """The ``fit`` loop for K models at once; see ``fit_ensemble``."""

    def __init__(self, models: Sequence[nn.Module], task: str, config: TrainConfig, strategy: str,
                 metrics: dict[str, Metric]) -> None:
        self.models, self.task, self.config, self.metrics = models, task, config, metrics
        self.device = torch.device(config.device)
        for model in models:
            model.to(self.device)
        self.ensemble = EnsembleModel(models, strategy).to(self.device)
        self.optimizer = config.make_optimizer(self.ensemble.parameters())
        self.active = torch.ones(len(models), dtype=torch.bool, device=self.device)
        self.runs = [_Run(epochs=[]) for _ in models]
        self.start = time.perf_counter()

    def retire(self, which: torch.Tensor, status: str, reasons: Sequence[str]) -> None:
        """End the runs flagged in ``which``: keep their weights, zero their slices."""
        indices = which.nonzero().flatten().tolist()
        self.ensemble.load_into(self.models, indices)
        self.ensemble.zero_models(which)
        self.active &= ~which
        seconds = (time.perf_counter() - self.start) / len(self.models)
        for k in indices:
            run = self.runs[k]
            run.status, run.reason, run.seconds = status, reasons[k], seconds

    def train_epoch(self, data: PreparedData, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """One pass over the data; returns each active model's mean training loss."""
        self.ensemble.train()
        total = torch.zeros(len(self.models), dtype=torch.float64, device=self.device)
        count = 0
        for index in batches(data.lengths, self.config.batch_size, self.config.bucket, generator):
            batch = slice_batch(data, index)
            losses = self.batch_losses(batch, epoch)
            if not self.active.any():
                break
            losses[self.active].sum().backward()
            self.ensemble.rnn.mask_gradients()
            if self.config.clip is not None:
                self.ensemble.clip_grad_norms(self.config.clip)
            self.optimizer.step()
            self.ensemble.after_step(self.active)
            total += torch.where(self.active, losses.detach().double(), 0.0) * len(index)
            count += len(index)
        return total / max(count, 1)

    def batch_losses(self, batch: tuple[torch.Tensor, ...], epoch: int) -> torch.Tensor:
        """Per-model losses of one batch. On a NaN/inf loss the fused kernel may have spread
        one model's NaN to all (0 * NaN), so the batch is re-run with ``"batched"``, which
        has no cross-model arithmetic, to find the culprits; they fail and the batch is run
        again without them."""
        inputs, lengths, targets, weights = batch
        strategy = None
        while True:
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.ensemble(inputs, lengths, strategy)
            losses = per_model_losses(self.task, logits, targets, lengths, weights)
            bad = self.active & ~torch.isfinite(losses.detach())
            if not bad.any():
                return losses
            if strategy is None and self.ensemble.rnn.strategy == "fused":
                strategy = "batched"
                continue
            values = losses.detach().tolist()
            self.retire(bad, "failed", [f"non-finite training loss ({v}) in epoch {epoch}" for v in values])
            strategy = None

    @torch.no_grad()
    def evaluate(self, data: PreparedData, strategy: str | None = None) -> list[dict[str, float]]:
        """``fit``'s test scores for every model (computed for all, used for the active);
        re-run with ``"batched"`` when a fused run produced non-finite logits (see
        ``batch_losses``)."""
        self.ensemble.eval()
        k = len(self.models)
        shape = (k,) + ((data.lengths.shape[0],) if data.task == "classify" else tuple(data.targets.shape))
        logits = torch.zeros(shape, device=self.device)
        for index in batches(data.lengths, self.config.batch_size, self.config.bucket, None):
            inputs, lengths, _, _ = slice_batch(data, index)
            index = index.to(self.device)
            out = self.ensemble(inputs, lengths, strategy)
            if data.task == "classify":
                logits[:, index] = out
            else:
                logits[:, index, : out.shape[2]] = out
        if strategy is None and self.ensemble.rnn.strategy == "fused" and not logits[self.active].isfinite().all():
            return self.evaluate(data, "batched")
        return [self.scores(data, logits[m]) for m in range(k)]

    def scores(self, data: PreparedData, logits: torch.Tensor) -> dict[str, float]:
        return score_logits(data, logits, self.metrics)

    def record_epoch(self, epoch: int, train_losses: torch.Tensor, scores: list[dict[str, float]]) -> None:
        """Append the epoch to every active run; retire those that failed or stop early."""
        failed, stopped = torch.zeros_like(self.active), torch.zeros_like(self.active)
        reasons = [""] * len(self.models)
        for k in self.active.nonzero().flatten().tolist():
            run, test_loss = self.runs[k], scores[k]["test_loss"]
            run.epochs.append({"epoch": epoch, "train_loss": float(train_losses[k]), **scores[k]})
            if not math.isfinite(test_loss):
                failed[k], reasons[k] = True, f"non-finite test loss ({test_loss}) in epoch {epoch}"
                continue
            run.best, run.stale = (test_loss, 0) if test_loss < run.best else (run.best, run.stale + 1)
            if self.config.patience is not None and run.stale >= self.config.patience:
                stopped[k] = True
                reasons[k] = f"early stop after epoch {epoch}: no lower test loss for {run.stale} epochs"
        if failed.any():
            self.retire(failed, "failed", reasons)
        if stopped.any():
            self.retire(stopped, "done", reasons)

    def run(self, train: PreparedData, test: PreparedData) -> list[History]:
        torch.manual_seed(self.config.seed)
        generator = torch.Generator().manual_seed(self.config.seed)
        for epoch in range(1, self.config.epochs + 1):
            train_losses = self.train_epoch(train, epoch, generator)
            if not self.active.any():
                break
            self.record_epoch(epoch, train_losses, self.evaluate(test))
            if not self.active.any():
                break
        if self.active.any():
            self.retire(self.active.clone(), "done", [""] * len(self.models))
        return [History(r.status, r.reason, r.epochs, dict(r.epochs[-1]) if r.epochs else {}, r.seconds)
                for r in self.runs]


def fit_ensemble(models: Sequence[nn.Module], train: Any, test: Any, config: TrainConfig,
                 metrics: dict[str, Metric] | None = None, strategy: str = "auto") -> list[History]:
    """Train K models, as one computation where that is faster; the result equals (to
    float tolerance) ``[fit(m, train, test, config, metrics) for m in models]``.

    ``models`` are all ``SequenceClassifier`` or all ``NextSymbolModel`` around (masked)
    unidirectional ``torch.nn.RNN/LSTM/GRU`` modules of one cell type, input size, hidden
    size and depth; their masks and weights may differ. They share ``config`` (so the batch
    order too). Their trained weights are written back into them. Each ``History`` is what
    ``fit`` would return, except ``seconds``: the ensemble's wall time until that model
    ended, divided by K (its share of the shared run). ``strategy`` is one of
    ``STRATEGIES``; ``"auto"`` applies ``choose_strategy``.
    """
    if len(models) < 1:
        raise ValueError("models must hold at least one model")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "auto":
        packable = _packable(models)
        hidden = models[0].rnn.hidden_size if packable else 0
        strategy = choose_strategy(len(models), hidden, config.batch_size) if packable else "separate"
    if strategy == "separate":
        return [fit(model, train, test, config, metrics) for model in models]
    train_data, test_data = prepare_pair(train, test, config)
    return _EnsembleTrainer(models, train_data.task, config, strategy, metrics or {}).run(train_data, test_data)
