"""Sparsity during learning: SET, RigL and DNW as hooks on the one loop, ``rnn_models.train.fit``.

* ``SET`` (Mocanu et al. 2018): every ``Schedule.update_every`` steps, drop the alive
  weights of smallest magnitude and grow as many at random, with small random values.
* ``RigL`` (Evci et al. 2020): the same drop, growth where the *dense* gradient of that
  step is largest; grown weights start at zero.
* ``DNW`` (Wortsman et al. 2019, "Discovering Neural Wirings"): the forward pass uses the
  top-k weights by magnitude of a dense set of weights, the gradient reaches all of them
  (straight-through), so the mask may change at every step.

A *matrix* (``SparseMatrix``) is a ``rnn_models.pruning.WeightClass``: a masked weight, a
``LayeredRNN`` block (its off-block entries are structural zeros, never candidates) or,
with ``shared_gates=False``, one gate block of either. With ``shared_gates=True`` (the
graph-prior convention) a matrix's gate blocks share one mask: a *connection* is the
same entry in every gate block, scored by the sum of their magnitudes. Each matrix keeps
its number of alive connections at every update (``density`` allocated ``"uniform"`` or
``"erk"``, or the counts of the masks the model starts with); ``confine=True`` lets
connections live only inside those starting masks (the prior).

How the dense gradient is had, on torch's fused kernels: the kernel computes every weight
gradient; the masked modules' ``GradientMask`` zeroes the masked entries. RigL sets the
modules' ``gradient_tap`` for the backward passes of update steps only, and so reads the
gradient before the masking without touching the training gradient. DNW keeps the
holders' masks at the *candidate* region and the top-k selection in its own state: after
each optimizer step it keeps a dense copy and zeroes the weights outside the top-k in
place (so the next forward pass and evaluation use exactly the top-k); before the next
optimizer step it puts the dense weights back, whose gradient (all candidates) the
optimizer then applies.

Structure emergence: after every epoch each hook records the mask's Jaccard overlap and
normalised Hamming distance to the previous epoch's mask (``mask_jaccard_prev``,
``mask_hamming_prev``; epoch 1 compares with the starting mask), the mask density and the
dense-gradient entries used (``dense_grad_entries``), and keeps every epoch's mask
(``epoch_masks``; ``overlap_with_final`` and ``determined_epoch`` read them after the run).
Early freezing (``freeze_epoch``, ``freeze_jaccard``) fixes the mask and trains sparse from
then on: no tap, no dense copy, the masks in the holders, no dense gradient used.

"Dense-gradient work" is counted where it is used: the gradient entries of candidate
connections that are not alive, for each backward pass whose dense gradient the
algorithm reads (RigL: update steps; DNW: every step until frozen). A fused dense kernel
computes them anyway; a sparse kernel would not have to.
"""

from __future__ import annotations

import functools
import math
from copy import deepcopy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rnn_models.pruning import WeightClass, weight_classes
from rnn_models.train import Hook, TrainState

ALLOCATIONS = ("uniform", "erk")
"""How a density is spread over matrices: the same in each, or Erdős–Rényi (ERK-style)."""


def _round(x: float) -> int:
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class Schedule:
    """When SET and RigL update their masks: every ``update_every`` optimizer steps before
    ``end_step``; at step ``t`` each matrix drops ``drop_fraction * (1 + cos(pi * t /
    end_step)) / 2`` of its alive connections (Evci et al. 2020's cosine decay)."""

    update_every: int = 100
    drop_fraction: float = 0.3
    end_step: int = 10_000

    def __post_init__(self) -> None:
        if not isinstance(self.update_every, int) or self.update_every < 1:
            raise ValueError(f"update_every must be an int >= 1, got {self.update_every!r}")
        if not 0.0 <= self.drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {self.drop_fraction!r}")
        if not isinstance(self.end_step, int) or self.end_step < 1:
            raise ValueError(f"end_step must be an int >= 1, got {self.end_step!r}")

    def fraction(self, step: int) -> float:
        """The drop fraction at optimizer step ``step`` (from 1); 0 where no update is due."""
        if step < 1 or step % self.update_every or step >= self.end_step:
            return 0.0
        return self.drop_fraction * (1.0 + math.cos(math.pi * step / self.end_step)) / 2.0


def allocate(sizes: Sequence[int], shapes: Sequence[tuple[int, int]], density: float,
             allocation: str = "uniform") -> list[int]:
    """Alive connections of each matrix at ``density`` of its ``sizes`` candidates:
    ``round(density * size)`` each (``"uniform"``), or Erdős–Rényi (``"erk"``, Evci et al.
    2020 for matrices): densities proportional to ``(rows + cols) / (rows * cols)`` of each
    matrix's ``shapes``, scaled so that ``density`` of all candidates is alive; a matrix that
    would exceed 1 is made dense and the rest rescaled."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    if allocation == "uniform":
        return [_round(density * n) for n in sizes]
    raw = [(rows + cols) / (rows * cols) for rows, cols in shapes]
    dense: set[int] = set()
    target = density * sum(sizes)
    while True:
        rest = target - sum(sizes[i] for i in dense)
        divisor = sum(raw[i] * sizes[i] for i in range(len(sizes)) if i not in dense)
        eps = rest / divisor if divisor > 0 else 0.0
        over = {i for i in range(len(sizes)) if i not in dense and raw[i] * eps > 1.0}
        if not over:
            break
        dense |= over
    return [sizes[i] if i in dense else min(sizes[i], _round(raw[i] * eps * sizes[i])) for i in range(len(sizes))]


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jaccard overlap ``|a & b| / |a | b|`` of two boolean masks (1 when both are empty)."""
    _check_pair(a, b)
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def hamming(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised Hamming distance of two boolean masks: the fraction of entries that differ."""
    _check_pair(a, b)
    return int((a != b).sum()) / a.numel() if a.numel() else 0.0


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dtype != torch.bool or b.dtype != torch.bool or a.shape != b.shape:
        raise ValueError(f"masks must be bool tensors of one shape, got {a.dtype} {tuple(a.shape)} "
                         f"and {b.dtype} {tuple(b.shape)}")


def reset_moments(optimizer: torch.optim.Optimizer, parameter: torch.Tensor, index: torch.Tensor) -> None:
    """Zero the optimizer's per-entry state of ``parameter`` at flat ``index``: every state
    tensor of the parameter's shape (Adam's ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``,
    SGD's ``momentum_buffer``, RMSprop's ``square_avg``...), so a dropped or grown weight
    starts without the history of the weight that was there."""
    for value in optimizer.state.get(parameter, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == parameter.shape:
            value.view(-1)[index] = 0


@dataclass(eq=False)
class SparseMatrix:
    """One matrix whose alive connections a dynamic-sparsity hook keeps at ``count``:
    connection ``j`` is the weight entries ``entries[:, j]`` (flat indices into the weight,
    one row per gate block sharing the mask), ``allowed`` the connections that may live,
    ``alive`` those that do, ``shape`` the matrix's (rows, cols) for ERK."""

    weight_class: WeightClass
    entries: torch.Tensor
    shape: tuple[int, int]
    allowed: torch.Tensor
    alive: torch.Tensor
    count: int = 0

    @property
    def name(self) -> str:
        return self.weight_class.name

    @property
    def values(self) -> torch.Tensor:
        return self.weight_class.values

    def score(self, tensor: torch.Tensor) -> torch.Tensor:
        """Per connection, the sum over its gate entries of ``|tensor|`` (a weight-shaped tensor)."""
        return tensor.detach().reshape(-1)[self.entries].abs().sum(0)

    def inactive_entries(self) -> int:
        """Weight entries of allowed connections that are not alive: a dense gradient's extra."""
        return self.entries.shape[0] * int((self.allowed & ~self.alive).sum())


def sparse_matrices(model: nn.Module, weights: str = "both", shared_gates: bool = True) -> list[SparseMatrix]:
    """The matrices of ``model`` a dynamic-sparsity hook manages (``weight_classes``, one
    per gate block unless ``shared_gates``), each with its current mask as ``alive``, every
    connection allowed and ``count`` its alive connections. Raises ValueError when
    ``shared_gates`` meets gate blocks whose masks differ."""
    return [_matrix(c, shared_gates) for c in weight_classes(model, weights, per_gate=not shared_gates)]


def _matrix(c: WeightClass, shared_gates: bool) -> SparseMatrix:
    """A class's entries grouped by connection: its region, gate block by gate block."""
    gates = getattr(c.holder, "gates", 1) if shared_gates else 1
    entries = c.region.flatten().nonzero().squeeze(1).view(gates, -1)
    mask = c.mask().reshape(-1)[entries]
    if not bool((mask == mask[0]).all()):
        raise ValueError(f"the gate blocks of {c.name} have different masks: pass shared_gates=False "
                         "(one mask per gate)")
    cols = c.region.shape[1]
    shape = (len(torch.unique(entries[0] // cols)), len(torch.unique(entries[0] % cols)))
    alive = mask[0].clone()
    return SparseMatrix(c, entries, shape, torch.ones_like(alive), alive, int(alive.sum()))


class DynamicSparsity(Hook):
    """What SET, RigL and DNW share (see the module doc): the matrices, their start masks,
    structure tracking and early freezing. Train one model on its own per hook
    (``fit(model, ...)`` or ``engine="separate"``); the hook restarts at each
    ``on_train_begin``.

    ``density``: the fraction of each matrix's candidate connections alive, spread by
    ``allocation`` (``ALLOCATIONS``), the start mask drawn at random (``seed``) among the
    candidates (weights turned on keep the model's values: start from an unmasked model);
    None keeps the model's masks and their counts (a prior start). ``confine``: the
    candidates are the connections of the model's masks at the start (needs a
    ``density``). ``weights``: ``"ih"``, ``"hh"`` or ``"both"`` (``rnn_models.pruning.WEIGHTS``).
    ``freeze_epoch`` / ``freeze_jaccard``: fix the mask after that epoch, or once an
    epoch's mask overlaps the one before by at least that Jaccard index.
    """

    def __init__(self, density: float | None = None, *, allocation: str = "uniform", shared_gates: bool = True,
                 weights: str = "both", confine: bool = False, freeze_epoch: int | None = None,
                 freeze_jaccard: float | None = None, seed: int = 0) -> None:
        if density is not None:
            allocate([1], [(1, 1)], density, allocation)  # checks density and allocation
        elif allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
        if confine and density is None:
            raise ValueError("confine=True needs a density: the masks the model starts with are the candidates")
        if freeze_epoch is not None and freeze_epoch < 1:
            raise ValueError(f"freeze_epoch must be None or >= 1, got {freeze_epoch!r}")
        if freeze_jaccard is not None and not 0.0 <= freeze_jaccard <= 1.0:
            raise ValueError(f"freeze_jaccard must be None or in [0, 1], got {freeze_jaccard!r}")
        self.density, self.allocation, self.shared_gates = density, allocation, shared_gates
        self.weights, self.confine, self.seed = weights, confine, seed
        self.freeze_epoch, self.freeze_jaccard = freeze_epoch, freeze_jaccard
        self._reset()

    def _reset(self) -> None:
        self.matrices: list[SparseMatrix] = []
        self.initial_mask = torch.zeros(0, dtype=torch.bool)
        self.epoch_masks: list[torch.Tensor] = []
        self.frozen_epoch: int | None = None
        self.dense_gradient_entries = 0
        self.dense_gradient_passes = 0
        self._epoch_entries = 0
        self._generator = torch.Generator().manual_seed(self.seed)

    # --- the mask ---------------------------------------------------------------------

    def mask_vector(self) -> torch.Tensor:
        """The alive connections of every matrix, laid end to end (on the CPU)."""
        return torch.cat([m.alive.cpu() for m in self.matrices]) if self.matrices else torch.zeros(0, dtype=torch.bool)

    def overlap_with_final(self) -> list[dict[str, float]]:
        """Per epoch, the Jaccard overlap and Hamming distance of its mask with the last
        epoch's: the structure-emergence curve (after the run)."""
        if not self.epoch_masks:
            return []
        final = self.epoch_masks[-1]
        return [{"epoch": e, "jaccard": jaccard(mask, final), "hamming": hamming(mask, final)}
                for e, mask in enumerate(self.epoch_masks, start=1)]

    def determined_epoch(self, threshold: float = 0.9) -> int | None:
        """The first epoch whose mask overlaps the final one by at least ``threshold`` (Jaccard)."""
        return next((o["epoch"] for o in self.overlap_with_final() if o["jaccard"] >= threshold), None)

    def holder_masks(self, vector: torch.Tensor | None = None) -> dict[tuple[nn.Module, str], torch.Tensor]:
        """The mask of each managed (holder, weight) with the connections of ``vector`` alive
        (a ``mask_vector()``, e.g. one of ``epoch_masks``; default: the current one), the
        holders' other entries as they are; nothing is written (see ``masked_copy``)."""
        vector = self.mask_vector() if vector is None else vector
        if vector.shape != (sum(len(m.alive) for m in self.matrices),):
            raise ValueError(f"vector must be a mask_vector() of {sum(len(m.alive) for m in self.matrices)} "
                             f"connections, got shape {tuple(vector.shape)}")
        parts = dict(zip(self.matrices, torch.split(vector, [len(m.alive) for m in self.matrices])))
        return self._masks(lambda m: parts[m].to(m.alive.device))

    def masked_copy(self, model: nn.Module, vector: torch.Tensor) -> nn.Module:
        """A copy of ``model`` (the one this hook trained) whose managed masks are those of
        ``vector`` (``holder_masks``): the structure at an earlier epoch, for its features."""
        names = {id(module): name for name, module in model.named_modules()}
        copy = deepcopy(model)
        modules = dict(copy.named_modules())
        for (holder, weight), mask in self.holder_masks(vector).items():
            modules[names[id(holder)]].set_mask(weight, mask)
        return copy

    def _masks(self, connections: Any) -> dict[tuple[nn.Module, str], torch.Tensor]:
        """Each (holder, weight)'s mask with ``connections(matrix)`` alive in each matrix."""
        masks = {}
        for (holder, weight), group in self._by_weight().items():
            mask = group[0].weight_class.mask().clone()
            for m in group:
                mask.view(-1)[m.entries] = connections(m).expand_as(m.entries)
            masks[(holder, weight)] = mask
        return masks

    def _write_masks(self, use_allowed: bool = False) -> None:
        """Put each matrix's alive (or, with ``use_allowed``, allowed) connections into its
        holder's mask, which zeroes the weights left out."""
        for (holder, weight), mask in self._masks(lambda m: m.allowed if use_allowed else m.alive).items():
            holder.set_mask(weight, mask)

    def _by_weight(self) -> dict[tuple[nn.Module, str], list[SparseMatrix]]:
        groups: dict[tuple[nn.Module, str], list[SparseMatrix]] = {}
        for m in self.matrices:
            groups.setdefault((m.weight_class.holder, m.weight_class.weight), []).append(m)
        return groups

    def _holders(self) -> list[nn.Module]:
        return list(dict.fromkeys(m.weight_class.holder for m in self.matrices))

    def _count_dense(self, entries: int) -> None:
        self.dense_gradient_entries += entries
        self._epoch_entries += entries

    # --- the events -------------------------------------------------------------------

    def on_train_begin(self, state: TrainState) -> None:
        if len(state.models) != 1 or state.model is not state.models[0]:
            raise ValueError(f"{type(self).__name__} needs one model trained on its own "
                             "(fit(model, ...) or engine='separate')")
        self._reset()
        self.matrices = sparse_matrices(state.model, self.weights, self.shared_gates)
        if self.confine:
            for m in self.matrices:
                m.allowed = m.alive.clone()
        if self.density is not None:
            counts = allocate([int(m.allowed.sum()) for m in self.matrices], [m.shape for m in self.matrices],
                              self.density, self.allocation)
            for m, count in zip(self.matrices, counts):
                m.count = count
                m.alive = self._start_alive(m)
        self._start()
        self.initial_mask = self.mask_vector()

    def _start_alive(self, m: SparseMatrix) -> torch.Tensor:
        """The start mask of a matrix at a given density: ``count`` allowed connections at random."""
        scores = torch.rand(m.alive.shape, generator=self._generator).to(m.alive.device)
        return _top(scores.masked_fill(~m.allowed, -1.0), m.count)

    def _start(self) -> None:
        """Put the start masks in place."""
        self._write_masks()

    def on_epoch_end(self, state: TrainState) -> None:
        """Record the mask's overlap with the previous epoch's, its density and the dense
        gradient entries used; keep the mask; freeze it when due."""
        mask = self.mask_vector()
        previous = self.epoch_masks[-1] if self.epoch_masks else self.initial_mask
        overlap = jaccard(previous, mask)
        self.epoch_masks.append(mask)
        state.record("mask_jaccard_prev", overlap)
        state.record("mask_hamming_prev", hamming(previous, mask))
        state.record("mask_density", float(mask.float().mean()) if mask.numel() else 0.0)
        state.record("dense_grad_entries", self._epoch_entries)
        self._epoch_entries = 0
        due = (self.freeze_epoch is not None and state.epoch >= self.freeze_epoch) or \
              (self.freeze_jaccard is not None and overlap >= self.freeze_jaccard)
        if self.frozen_epoch is None and due:
            self.frozen_epoch = state.epoch
            self._freeze()
        state.record("mask_frozen", float(self.frozen_epoch is not None))

    def _freeze(self) -> None:
        """Fix the mask from now on (SET, RigL: stop updating)."""

    def on_train_end(self, state: TrainState) -> None:
        """Leave no tap behind."""
        for holder in self._holders():
            holder.__dict__.pop("gradient_tap", None)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest ``scores``."""
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    chosen[torch.topk(scores, k).indices] = True
    return chosen


class _DropAndGrow(DynamicSparsity):
    """SET and RigL: magnitude drop and a growth rule on ``schedule``'s update steps."""

    def __init__(self, density: float | None = None, schedule: Schedule = Schedule(), **kwargs: Any) -> None:
        super().__init__(density, **kwargs)
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self.schedule = schedule

    def after_step(self, state: TrainState) -> None:
        """Drop and grow on an update step (after the optimizer step and the re-masking):
        the new masks zero the dropped weights, then the grown get ``_grown_values``, and
        the optimizer state of both is reset."""
        fraction = self.schedule.fraction(state.step)
        if self.frozen_epoch is not None or fraction == 0.0:
            return
        changes = [(m, *self._drop_and_grow(m, fraction)) for m in self.matrices]
        changes = [(m, dropped, grown) for m, dropped, grown in changes if len(grown)]
        if not changes:
            return
        self._write_masks()  # set every mask before writing values: set_mask re-applies them all
        with torch.no_grad():
            for m, dropped, grown in changes:
                weight = m.values
                weight.view(-1)[grown] = self._grown_values(len(grown)).to(weight.device, weight.dtype)
                reset_moments(state.optimizer, weight, torch.cat([dropped, grown]))

    def _drop_and_grow(self, m: SparseMatrix, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Update ``m.alive``: drop the ``fraction`` of its alive connections of least
        magnitude, grow as many among the allowed ones not alive before (fewer when fewer
        are free); return the weight entries (flat indices) dropped and grown."""
        free = m.allowed & ~m.alive
        k = min(_round(fraction * int(m.alive.sum())), int(free.sum()))
        drop = torch.topk(m.score(m.values).masked_fill(~m.alive, math.inf), k, largest=False).indices
        grow = torch.topk(self._growth_scores(m).masked_fill(~free, -math.inf), k).indices
        m.alive[drop], m.alive[grow] = False, True
        return m.entries[:, drop].reshape(-1), m.entries[:, grow].reshape(-1)

    def _growth_scores(self, m: SparseMatrix) -> torch.Tensor:
        raise NotImplementedError

    def _grown_values(self, n: int) -> torch.Tensor:
        return torch.zeros(n)

    def _freeze(self) -> None:
        """Nothing to undo: the masks are in the holders; updates stop."""


class SET(_DropAndGrow):
    """Sparse Evolutionary Training (Mocanu et al. 2018): magnitude drop, random growth;
    grown weights drawn from ``N(0, grow_scale**2)``. See ``DynamicSparsity`` for the
    other arguments."""

    def __init__(self, density: float | None = None, schedule: Schedule = Schedule(), grow_scale: float = 0.01,
                 **kwargs: Any) -> None:
        super().__init__(density, schedule, **kwargs)
        if not grow_scale >= 0.0:
            raise ValueError(f"grow_scale must be >= 0, got {grow_scale!r}")
        self.grow_scale = grow_scale

    def _growth_scores(self, m: SparseMatrix) -> torch.Tensor:
        return torch.rand(m.alive.shape, generator=self._generator).to(m.alive.device)

    def _grown_values(self, n: int) -> torch.Tensor:
        return torch.randn(n, generator=self._generator) * self.grow_scale


class RigL(_DropAndGrow):
    """Rigging the Lottery (Evci et al. 2020): magnitude drop, growth by the dense
    gradient's magnitude of the update step (read through the holders' ``gradient_tap``
    on that step's backward pass only); grown weights start at zero. See
    ``DynamicSparsity`` for the other arguments."""

    def _reset(self) -> None:
        super()._reset()
        self._gradients: dict[tuple[int, str], torch.Tensor] = {}

    def before_batch(self, state: TrainState) -> None:
        """Tap the dense gradient on the backward pass of an update step."""
        if self.frozen_epoch is None and self.schedule.fraction(state.step + 1) > 0.0:
            for holder in self._holders():
                holder.gradient_tap = functools.partial(self._tap, holder)

    def _tap(self, holder: nn.Module, weight: str, grad: torch.Tensor) -> None:
        """Keep the dense gradient of a weight this hook manages (a holder may mask others
        too, e.g. a LayeredRNN's input blocks when only ``weights="hh"`` is managed)."""
        managed = self._by_weight().get((holder, weight))
        if managed is None:
            return
        self._gradients[(id(holder), weight)] = grad.detach()
        self._count_dense(sum(m.inactive_entries() for m in managed))

    def before_step(self, state: TrainState) -> None:
        """Remove the taps once the backward pass is done."""
        if self._gradients:
            self.dense_gradient_passes += 1
        for holder in self._holders():
            holder.__dict__.pop("gradient_tap", None)

    def after_step(self, state: TrainState) -> None:
        super().after_step(state)
        self._gradients = {}

    def _growth_scores(self, m: SparseMatrix) -> torch.Tensor:
        grad = self._gradients.get((id(m.weight_class.holder), m.weight_class.weight))
        return torch.zeros(m.alive.shape, device=m.alive.device) if grad is None else m.score(grad)


class DNW(DynamicSparsity):
    """Discovering Neural Wirings (Wortsman et al. 2019): each matrix's forward pass uses
    its ``count`` connections of largest magnitude, the gradient updates all candidates
    (see the module doc for how, on the masked modules' in-place masks). Until frozen the
    holders' masks are the candidate region; when frozen, and at the end of training, they
    become the top-k, so the trained model is sparse. See ``DynamicSparsity`` for the
    arguments (with a ``density`` the start mask is the top-k, not a random draw)."""

    def _reset(self) -> None:
        super()._reset()
        self._dense: dict[tuple[nn.Module, str], torch.Tensor] = {}

    def _start_alive(self, m: SparseMatrix) -> torch.Tensor:
        return m.alive  # chosen by _select

    def _start(self) -> None:
        self._write_masks(use_allowed=True)
        self._dense = {(holder, weight): getattr(holder, weight).detach().clone()
                       for holder, weight in self._by_weight()}
        self._select()

    @torch.no_grad()
    def _select(self) -> None:
        """Keep the dense weights; alive = the top-k of each matrix; zero the rest in place."""
        for (holder, weight), group in self._by_weight().items():
            values = getattr(holder, weight)
            self._dense[(holder, weight)].copy_(values)
            for m in group:
                m.alive = _top(m.score(values).masked_fill(~m.allowed, -math.inf), m.count)
                values.view(-1)[m.entries[:, ~m.alive].reshape(-1)] = 0.0

    @torch.no_grad()
    def before_step(self, state: TrainState) -> None:
        """Put the dense weights back for the optimizer step (their gradient is dense)."""
        if self.frozen_epoch is not None:
            return
        for (holder, weight), dense in self._dense.items():
            getattr(holder, weight).copy_(dense)
        self.dense_gradient_passes += 1
        self._count_dense(sum(m.inactive_entries() for m in self.matrices))

    def after_step(self, state: TrainState) -> None:
        """Select the new top-k from the updated dense weights."""
        if self.frozen_epoch is None:
            self._select()

    def _freeze(self) -> None:
        """The top-k become the holders' masks; the dense copy goes."""
        self._write_masks()
        self._dense = {}

    def on_train_end(self, state: TrainState) -> None:
        super().on_train_end(state)
        if self._dense:
            self._freeze()
