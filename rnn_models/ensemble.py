"""K masked recurrent models trained together: the stack ``rnn_models.train.fit`` trains
with ``engine="batched"``, giving the results of K separate runs.

A sweep trains hundreds of small networks. ``EnsembleModel`` holds K models of one cell
type and size (different masks, different initial weights) in a *compact* layout with the
model axis first (``(K, G*H, in)``), so element-wise optimizers (Adam, AdamW, SGD, RMSprop)
update every model independently and whole-model statistics (gradient norms) are
reductions over the non-model axes. The recurrence is
``rnn_models.batched.batched_recurrence``: a time loop of batched matrix products over the
model axis with hand-written backpropagation through time. No arithmetic mixes two
models, so a model whose loss turns non-finite simply leaves the stack (``retire``): its
weights are written back to its own object and its compact slice is zeroed.

Whether training together pays depends on size: on a CPU it does for many small models
on small batches, where each model's own kernels are call-bound
(``rnn_models.engines.choose_engine``; measurements in docs/bench/ensemble.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rnn_models.batched import batched_recurrence
from rnn_models.masked import GATES, GradientMask, mask_scale
from rnn_models.train import NextSymbolModel, SequenceClassifier, task_loss

_HEADS = (SequenceClassifier, NextSymbolModel)


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


def check_stackable(models: Sequence[nn.Module]) -> None:
    """Raise ValueError naming what keeps ``models`` from training as one ``EnsembleModel``:
    they must all be ``SequenceClassifier`` or all ``NextSymbolModel`` around unidirectional
    (masked) ``torch.nn.RNN/LSTM/GRU`` modules of one cell type, input size, hidden size,
    depth and bias, without dropout or projections, none carrying its state across
    batches. The one place this is decided."""
    if len(models) < 1:
        raise ValueError("models must hold at least one model")
    kind = type(models[0])
    if kind not in _HEADS or any(type(m) is not kind for m in models):
        raise ValueError("models must all be SequenceClassifier or all NextSymbolModel, got "
                         f"{sorted({type(m).__name__ for m in models})}")
    if any(getattr(m, "stateful", False) for m in models):
        raise ValueError("models must not carry their state across batches (stateful): a stack cannot")
    if not all(isinstance(m.rnn, nn.RNNBase) for m in models):
        raise ValueError("models must wrap torch.nn.RNN/LSTM/GRU (or masked) modules")
    _check_compatible([m.rnn for m in models])


def stackable(models: Sequence[nn.Module]) -> bool:
    """Whether ``check_stackable`` passes: ``fit``'s "auto" stacks only such models."""
    try:
        check_stackable(models)
    except ValueError:
        return False
    return True


class EnsembleRNN(nn.Module):
    """K unidirectional recurrent modules of one cell type and size, run as one module.

    Built from K (masked) ``torch.nn.RNN/LSTM/GRU`` modules, whose weights and masks it
    copies into compact ``(K, ...)`` parameters and buffers of the same names
    (``weight_hh_l0`` of shape ``(K, G*H, H)``, ``weight_hh_l0_mask``, ...). ``forward``
    takes one batch-first input shared by all models and returns ``(K, B, T, H)``.
    """

    def __init__(self, rnns: Sequence[nn.RNNBase]) -> None:
        super().__init__()
        _check_compatible(rnns)
        first = rnns[0]
        self.cell = _cell_of(first)
        self.num_models, self.hidden_size = len(rnns), first.hidden_size
        self.input_size, self.num_layers, self.gates = first.input_size, first.num_layers, GATES[self.cell]
        self.weight_names = list(first._flat_weights_names)
        for name in self.weight_names:
            stacked = torch.stack([getattr(r, name).detach() for r in rnns])
            self.register_parameter(name, nn.Parameter(stacked.clone()))
            if name.startswith("weight_"):
                masks = [getattr(r, "masks", {}).get(name) for r in rnns]
                full = torch.stack([torch.ones_like(getattr(r, name), dtype=torch.bool) if m is None else m
                                    for r, m in zip(rnns, masks)])
                if not bool(full.all()):
                    self.register_buffer(name + "_mask", full)
                    getattr(self, name).register_hook(GradientMask(self, name))
        self._mask_cache: dict[str, tuple[torch.Tensor, int, torch.Tensor]] = {}
        self.apply_masks()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Outputs ``(K, B, T, H)`` of every model for batch-first ``inputs`` ``(B, T, in)``."""
        if inputs.dim() != 3 or inputs.shape[2] != self.input_size:
            raise ValueError(f"inputs must be (batch, time, {self.input_size}), got {tuple(inputs.shape)}")
        layer_input = inputs.unsqueeze(0).expand(self.num_models, -1, -1, -1)  # one input for all models
        for layer in range(self.num_layers):
            layer_input = batched_recurrence(
                self.cell, layer_input, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}"),
                getattr(self, f"bias_ih_l{layer}", None), getattr(self, f"bias_hh_l{layer}", None))
        return layer_input

    def apply_masks(self) -> None:
        """Zero every masked weight (``masked_fill`` also clears NaN)."""
        with torch.no_grad():
            for name, mask in self.masks.items():
                getattr(self, name).masked_fill_(~mask, 0.0)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """The compact ``(K, ...)`` boolean mask of every weight that hides something, by name
        (gradients of masked entries are zeroed by a ``GradientMask`` hook)."""
        return {name: self._buffers[name + "_mask"] for name in self.weight_names if name + "_mask" in self._buffers}

    def mask_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, 0/1 mask) of every masked weight: what the ``rnn_models.masked.Remask``
        hook multiplies after each optimizer step."""
        return [(getattr(self, name), self.scale(name)) for name in self.masks]

    def scale(self, name: str) -> torch.Tensor:
        """The compact mask of weight ``name`` as 0/1 in the weight's dtype (cached)."""
        return mask_scale(self._mask_cache, name, self._buffers[name + "_mask"], getattr(self, name).dtype)

    def load_into(self, rnns: Sequence[nn.RNNBase], models: Sequence[int]) -> None:
        """Copy the compact weights of ``models`` into their own modules."""
        for k in models:
            with torch.no_grad():
                for name in self.weight_names:
                    getattr(rnns[k], name).copy_(getattr(self, name)[k])


class EnsembleModel(nn.Module):
    """K ``SequenceClassifier`` or K ``NextSymbolModel`` (all of one kind) as one module,
    and the stack ``rnn_models.train.fit`` trains them as (``engine="batched"``).

    ``forward(inputs, lengths)`` returns ``(K, B)`` sequence logits or ``(K, B, T, V)``
    step logits: model k's slice equals what model k alone returns. The loop's stack
    methods (``losses``, ``logits``, ``clip``, ``after_step``, ``retire``) keep every model
    apart: its own loss, clipping and, when it ends, its weights written back to it.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        check_stackable(models)
        self.classify = type(models[0]) is SequenceClassifier
        self.members = list(models)  # a plain list: not submodules, their weights are copied
        self.rnn = EnsembleRNN([m.rnn for m in models])
        self.readout_weight = nn.Parameter(torch.stack([m.readout.weight.detach() for m in models]).clone())
        self.readout_bias = nn.Parameter(torch.stack([m.readout.bias.detach() for m in models]).clone())
        self.register_buffer("retired", torch.zeros(len(models), dtype=torch.bool), persistent=False)

    @property
    def num_models(self) -> int:
        return self.rnn.num_models

    @property
    def module(self) -> "EnsembleModel":
        """What the training loop optimizes: the stack itself."""
        return self

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = self.rnn(inputs)  # (K, B, T, H)
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

    # -- the training loop's stack interface ---------------------------------------------

    def logits(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self(inputs, lengths)

    def losses(self, task: str, inputs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
               weights: torch.Tensor | None) -> torch.Tensor:
        """``(K,)`` losses of one batch: every model's ``task_loss``."""
        return per_model_losses(task, self(inputs, lengths), targets, lengths, weights)

    def clip(self, max_norm: float) -> torch.Tensor:
        """Per-model ``torch.nn.utils.clip_grad_norm_``: scale each model's gradients so
        that its own norm is at most ``max_norm``; returns the norms before clipping."""
        norms = self.grad_norms()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for param in self.parameters():
            if param.grad is not None:
                param.grad.mul_(scale.view(-1, *([1] * (param.dim() - 1))))
        return norms

    def after_step(self, active: Sequence[bool]) -> None:
        """Re-zero the slices of models that left (their optimizer state still moves them)."""
        if not all(active):
            self.zero_models(self.retired)

    def retire(self, models: Sequence[int]) -> None:
        """Write the weights of ``models`` back into their own objects and zero their slices
        (by assignment, which clears NaN too)."""
        self.load_into(self.members, models)
        self.retired[list(models)] = True
        self.zero_models(self.retired)

    # -- per-model bookkeeping -----------------------------------------------------------

    def zero_models(self, which: torch.Tensor) -> None:
        """Set every parameter of the models flagged in ``which`` (bool ``(K,)``) to 0, NaN too."""
        with torch.no_grad():
            for param in self.parameters():
                param[which] = 0.0

    def grad_norms(self) -> torch.Tensor:
        """``(K,)`` gradient norm of each model over all its parameters."""
        squares = [p.grad.flatten(1).square().sum(1) for p in self.parameters() if p.grad is not None]
        return torch.stack(squares).sum(0).sqrt()

    def load_into(self, models: Sequence[nn.Module], which: Sequence[int]) -> None:
        """Write the weights of the models numbered in ``which`` back into their own objects."""
        self.rnn.load_into([m.rnn for m in models], which)
        with torch.no_grad():
            for k in which:
                models[k].readout.weight.copy_(self.readout_weight[k])
                models[k].readout.bias.copy_(self.readout_bias[k])


def per_model_losses(task: str, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                     weights: torch.Tensor | None) -> torch.Tensor:
    """``(K,)`` losses: ``rnn_models.train.task_loss`` of every model's logits, vectorised."""
    return torch.func.vmap(lambda one: task_loss(task, one, targets, lengths, weights))(logits)
