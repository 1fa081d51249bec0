"""Sparsity from pruning, as masks: magnitude pruning, lottery-ticket controls, robustness.

* Magnitude pruning of See, Luong & Manning (2016, "Compression of Neural Machine
  Translation Models via Pruning"): ``"blinded"`` prunes the smallest weights under one
  threshold over all classes; ``"uniform"`` the same fraction from each class;
  ``"distributed"`` the weights below λ·σ of their class (σ its standard deviation), λ
  chosen so that the requested fraction goes overall; ``"random"`` prunes at random, the
  control. A *class* (``WeightClass``) is a weight matrix, or one gate block of it
  (``per_gate``); in a ``LayeredRNN`` each block (the study's per-connection layer) is its
  own matrix.
* Pruning only ever clears entries of a holder's mask (``set_mask``): a weight a prior mask
  (or a ``LayeredRNN``'s block structure) leaves out is never counted, ranked or revived,
  and the pruned model trains on the same fused engines through the one loop,
  ``rnn_models.train.fit``, whose ``Remask`` hook keeps pruned weights exactly zero.
* Lottery tickets (Frankle & Carbin 2019; Zhou et al. 2019) and structure alone (Van
  Gelder, Wortsman & Ehsani 2020): ``KeepWeights`` keeps the weights at initialisation or
  epoch k; ``rewind`` puts survivors back to them, ``reinit`` draws them afresh (from a new
  model), ``random_masks`` re-draws each class's mask at the same density.
* ``robustness_curve``: accuracy as a trained network is pruned further without
  retraining, and its area under the curve.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rnn_models.config import TrainConfig
from rnn_models.layered import LayeredRNN
from rnn_models.masked import GATE_NAMES
from rnn_models.train import History, Hook, TrainState, fit, predict, prepare_data, task_accuracy

SCHEMES = ("blinded", "uniform", "distributed", "random")
"""Pruning schemes: See et al.'s class-blinded, class-uniform, class-distributed; random."""
WEIGHTS = ("ih", "hh", "both")
"""Prunable sets: input-to-hidden (``weight_ih_*``, and the layers of a ``MaskedMLP``),
hidden-to-hidden (``weight_hh_*``), or both. The readout is a separate switch."""


@dataclass(frozen=True, eq=False)
class WeightClass:
    """One class of weights: the entries ``region`` (a bool tensor of the weight's shape) of
    weight ``weight`` of the mask holder ``holder``. ``key`` is the weight's name in
    ``model.named_parameters()``; ``name`` adds the block and gate when the class is one."""

    name: str
    key: str
    holder: nn.Module
    weight: str
    region: torch.Tensor

    @property
    def values(self) -> torch.Tensor:
        return getattr(self.holder, self.weight)

    def mask(self) -> torch.Tensor:
        """The holder's current mask of the weight (all True when it has none)."""
        return _mask_of(self.holder, self.weight)

    def alive(self) -> torch.Tensor:
        """Flat indices of the class's entries the current mask keeps: its weights."""
        return (self.region & self.mask()).flatten().nonzero().squeeze(1)


def _mask_of(holder: nn.Module, weight: str) -> torch.Tensor:
    """``holder``'s current mask of ``weight``, all True when it has none."""
    current = holder.masks.get(weight)
    return torch.ones_like(getattr(holder, weight), dtype=torch.bool) if current is None else current


def _is_holder(module: nn.Module) -> bool:
    return callable(getattr(module, "set_mask", None)) and hasattr(module, "maskable_weights")


def _selected(weight: str, weights: str) -> bool:
    kind = "hh" if weight.startswith("weight_hh") else "ih"
    return weights == "both" or weights == kind


def _gate_rows(rows: torch.Tensor, gate_names: Sequence[str], per_gate: bool) -> list[tuple[str, torch.Tensor]]:
    """``rows`` (gate blocks stacked) whole, or with ``per_gate`` split into one labelled
    part per gate block."""
    if not per_gate or len(gate_names) == 1:
        return [("", rows)]
    return [(f"[{g}]", part) for g, part in zip(gate_names, rows.chunk(len(gate_names)))]


def _holder_classes(path: str, holder: nn.Module, weights: str | None, per_gate: bool) -> list[WeightClass]:
    """Classes of a masked module: each selected weight (``weights`` None: all of them)."""
    classes = []
    gate_names = GATE_NAMES[holder.cell] if hasattr(holder, "cell") else ("",)
    for weight in holder.maskable_weights:
        if weights is not None and not _selected(weight, weights):
            continue
        values = getattr(holder, weight)
        key = f"{path}.{weight}" if path else weight
        for label, rows in _gate_rows(torch.arange(values.shape[0]), gate_names, per_gate):
            region = torch.zeros_like(values, dtype=torch.bool)
            region[rows.to(values.device)] = True
            classes.append(WeightClass(key + label, key, holder, weight, region))
    return classes


def _layered_classes(path: str, net: LayeredRNN, weights: str, per_gate: bool) -> list[WeightClass]:
    """Classes of a ``LayeredRNN``: each block's own matrices; off-block entries are no weights."""
    classes = []
    prefix = f"{path}.layers" if path else "layers"
    for j, layer in enumerate(net.layers):
        for b in range(len(net.block_sources(j))):
            for weight, index in net.block_slices(j, b).items():
                if not weight.startswith("weight") or not _selected(weight, weights):
                    continue
                rows, cols = index
                key = f"{prefix}.{j}.{weight}"
                for label, part in _gate_rows(rows, GATE_NAMES[net.cell], per_gate):
                    region = torch.zeros_like(getattr(layer, weight), dtype=torch.bool)
                    region[part, cols] = True
                    classes.append(WeightClass(f"{key}[block {b}]{label}", key, layer, weight, region))
    return classes


def weight_classes(model: nn.Module, weights: str = "both", readout: bool = False,
                   per_gate: bool = False) -> list[WeightClass]:
    """The prunable classes of ``model``, in module order: every selected weight (``WEIGHTS``)
    of its masked modules (``MaskedRNN/LSTM/GRU``, ``MaskedLinear``), each block of a
    ``LayeredRNN``, and with ``readout`` the ``MaskedLinear`` named ``readout`` (all its
    weights; ``rnn_models.mlp.mask_readout`` makes a plain readout maskable). ``per_gate``
    makes each gate block of a gated weight its own class.

    Raises ValueError for an unknown ``weights``, an unmasked torch recurrent module (it
    cannot hold a mask: build it with ``rnn_models.masked.make_rnn``), a plain readout when
    ``readout`` is set, or a model with no class at all.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    classes: list[WeightClass] = []
    inside_layered: set[int] = set()
    for path, module in model.named_modules():
        is_readout = path.rsplit(".", 1)[-1] == "readout"
        if id(module) in inside_layered:
            continue
        if isinstance(module, LayeredRNN):
            inside_layered |= {id(m) for m in module.modules()}
            classes += _layered_classes(path, module, weights, per_gate)
        elif _is_holder(module):
            if readout or not is_readout:
                classes += _holder_classes(path, module, None if is_readout else weights, per_gate)
        elif isinstance(module, nn.RNNBase):
            raise ValueError(f"module {path or 'model'!r} is an unmasked {type(module).__name__}: build it with "
                             "rnn_models.masked.make_rnn to prune it")
        elif readout and is_readout:
            raise ValueError(f"readout=True needs a maskable readout, got {type(module).__name__} at {path!r}: "
                             "call rnn_models.mlp.mask_readout(model) first")
    if not classes:
        raise ValueError(f"model has no prunable weights for weights={weights!r}, readout={readout}")
    return classes


# ---------------------------------------------------------------------------------------
# pruning
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruning:
    """What one call of ``prune`` did: per class name, the weights it ``pruned`` and those
    ``remaining``; ``threshold`` is the magnitude cut (``blinded``), λ (``distributed``) or
    None (``uniform``, ``random``, or nothing pruned)."""

    scheme: str
    amount: float
    pruned: dict[str, int]
    remaining: dict[str, int]
    threshold: float | None

    @property
    def fraction(self) -> float:
        """Fraction of the weights alive before the call that it pruned."""
        total = sum(self.pruned.values()) + sum(self.remaining.values())
        return sum(self.pruned.values()) / total if total else 0.0


def _count(amount: float, n: int) -> int:
    """``amount`` of ``n`` entries, rounded half up."""
    return int(amount * n + 0.5)


def _lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` lowest ``scores``; ties go to the earlier position."""
    return torch.sort(scores, stable=True).indices[:k]


def _scores(classes: list[WeightClass], alive: list[torch.Tensor], scheme: str, seed: int) -> list[torch.Tensor]:
    """Each class's ranking score of its alive weights: low is pruned first."""
    values = [c.values.detach().flatten()[a].float() for c, a in zip(classes, alive)]
    if scheme == "random":
        generator = torch.Generator().manual_seed(seed)
        return [torch.rand(len(v), generator=generator).to(v.device) for v in values]
    if scheme == "distributed":
        # |w| / sigma_class: pruning the lowest is See et al.'s |w| < lambda * sigma; 0/0 ranks first
        return [(v.abs() / v.std(unbiased=False)).nan_to_num(nan=0.0, posinf=torch.inf) if len(v) else v
                for v in values]
    return [v.abs() for v in values]


def _check_amount(amount: float) -> None:
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be a fraction in [0, 1], got {amount!r}")


def _set_class_masks(classes: list[WeightClass], cleared: list[torch.Tensor], kept: list[torch.Tensor]) -> None:
    """Per weight: the current mask with ``cleared`` flat positions off and ``kept`` on."""
    new: dict[tuple[int, str], tuple[WeightClass, torch.Tensor]] = {}
    for c, off, on in zip(classes, cleared, kept):
        _, mask = new.setdefault((id(c.holder), c.weight), (c, c.mask().clone()))
        flat = mask.view(-1)
        flat[off] = False
        flat[on] = True
    for c, mask in new.values():
        c.holder.set_mask(c.weight, mask)


def prune(model: nn.Module, scheme: str, amount: float, weights: str = "both", readout: bool = False,
          per_gate: bool = False, seed: int = 0) -> Pruning:
    """Prune ``amount`` (a fraction) of the weights still alive in ``model``'s classes
    (``weight_classes(model, weights, readout, per_gate)``) by ``scheme`` (``SCHEMES``, see
    the module doc), clearing their entries in the masks: exactly ``round(amount * n)`` of
    the ``n`` alive weights overall, or of each class's for ``"uniform"``. ``seed`` drives
    ``"random"``. Calling it again prunes a fraction of what remains (iterative pruning)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    _check_amount(amount)
    classes = weight_classes(model, weights, readout, per_gate)
    alive = [c.alive() for c in classes]
    scores = _scores(classes, alive, scheme, seed)
    if scheme == "uniform":
        picks = [_lowest(s, _count(amount, len(s))) for s in scores]
    else:
        flat = torch.cat([s.cpu() for s in scores])
        chosen = torch.zeros(len(flat), dtype=torch.bool)
        chosen[_lowest(flat, _count(amount, len(flat)))] = True
        picks = [part.nonzero().squeeze(1) for part in chosen.split([len(s) for s in scores])]
    threshold = None
    if scheme in ("blinded", "distributed") and any(len(p) for p in picks):
        threshold = max(float(s[p.to(s.device)].max()) for s, p in zip(scores, picks) if len(p))
    cleared = [a[p.to(a.device)] for a, p in zip(alive, picks)]
    _set_class_masks(classes, cleared, [a[:0] for a in alive])
    return Pruning(scheme, amount, {c.name: len(p) for c, p in zip(classes, picks)},
                   {c.name: len(a) - len(p) for c, a, p in zip(classes, alive, picks)}, threshold)


def per_round(total: float, rounds: int) -> float:
    """The fraction to prune in each of ``rounds`` rounds so that ``total`` is pruned in all:
    ``1 - (1 - total) ** (1 / rounds)``."""
    _check_amount(total)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    return 1.0 - (1.0 - total) ** (1.0 / rounds)


class StopOnPlateau(Hook):
    """Stop a model's training once an epoch raises its ``metric`` (a key of the epoch's
    test scores, ``test_acc`` by default) by less than ``min_gain`` over the epoch before:
    retraining "until the gain falls below a threshold"."""

    def __init__(self, min_gain: float, metric: str = "test_acc") -> None:
        self.min_gain, self.metric = float(min_gain), metric
        self.last: dict[int, float] = {}

    def on_train_begin(self, state: TrainState) -> None:
        self.last = {}

    def on_epoch_end(self, state: TrainState) -> None:
        for k, scores in enumerate(state.scores):
            if scores is None or not state.active[k]:
                continue
            value = scores[self.metric]
            if k in self.last and value - self.last[k] < self.min_gain:
                state.stop(f"{self.metric} rose by less than {self.min_gain} in epoch {state.epoch}", model=k)
            self.last[k] = value


@dataclass(frozen=True)
class PruneRound:
    """One round of ``iterative_pruning``: what was pruned, the fraction of the weights
    alive before round 1 that remain, the test accuracy right after pruning (before
    retraining) and the retraining's ``History``."""

    round: int
    pruning: Pruning
    remaining: float
    pruned_acc: float
    history: History


def iterative_pruning(model: nn.Module, train: Any, test: Any, config: TrainConfig, scheme: str,
                      amount: float, rounds: int = 1, weights: str = "both", readout: bool = False,
                      per_gate: bool = False, seed: int = 0, min_gain: float | None = None,
                      rewind_to: Mapping[str, torch.Tensor] | None = None,
                      hooks: Sequence[Any] = ()) -> list[PruneRound]:
    """Prune ``amount`` of the remaining weights (``prune``), then retrain with ``fit`` for
    ``config.epochs`` (or, with ``min_gain``, until an epoch gains less test accuracy:
    ``StopOnPlateau``), ``rounds`` times; one round is one-shot pruning. With ``rewind_to``
    (weights from ``KeepWeights``) survivors are rewound before each retraining: iterative
    magnitude pruning with rewinding (Frankle & Carbin 2019). Round r prunes with seed
    ``seed + r`` (``"random"``). Pruned weights stay exactly zero through retraining."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    classes = weight_classes(model, weights, readout, per_gate)
    start = sum(len(c.alive()) for c in classes)
    results = []
    for r in range(1, rounds + 1):
        pruning = prune(model, scheme, amount, weights, readout, per_gate, seed + r)
        if rewind_to is not None:
            rewind(model, rewind_to)
        pruned_acc = accuracy(model, test, config.device)
        extra = [] if min_gain is None else [StopOnPlateau(min_gain)]
        history = fit(model, train, test, config, hooks=[*hooks, *extra])
        remaining = sum(pruning.remaining.values()) / start if start else 0.0
        results.append(PruneRound(r, pruning, remaining, pruned_acc, history))
    return results


# ---------------------------------------------------------------------------------------
# lottery tickets and structure alone
# ---------------------------------------------------------------------------------------


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter of ``model``, by name (masks are not parameters)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class KeepWeights(Hook):
    """Keep the trained model's parameters (``snapshot``) at initialisation (epoch 0, before
    the first step) and after each epoch in ``epochs``: ``weights[epoch]``. One hook per
    model, trained on its own (``fit(model, ...)``), since a stack of models holds their
    weights elsewhere until they end."""

    def __init__(self, epochs: Sequence[int] = (0,)) -> None:
        if any(e < 0 for e in epochs):
            raise ValueError(f"epochs must be >= 0, got {list(epochs)}")
        self.epochs = frozenset(epochs)
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def _keep(self, state: TrainState) -> None:
        if len(state.models) != 1 or state.model is not state.models[0]:
            raise ValueError("KeepWeights needs one model trained on its own (fit(model, ...) or engine='separate')")
        if state.epoch in self.epochs:
            self.weights[state.epoch] = snapshot(state.model)

    def on_train_begin(self, state: TrainState) -> None:
        self.weights = {}
        self._keep(state)

    def on_epoch_end(self, state: TrainState) -> None:
        self._keep(state)


def _holders(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if _is_holder(m)]


def rewind(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Set every parameter of ``model`` to ``weights`` (from ``snapshot`` or ``KeepWeights``),
    keeping the current masks: survivors get their kept values, pruned weights stay zero."""
    parameters = dict(model.named_parameters())
    for name, p in parameters.items():
        if name not in weights or tuple(weights[name].shape) != tuple(p.shape):
            found = tuple(weights[name].shape) if name in weights else "nothing"
            raise ValueError(f"weights must hold {name!r} of shape {tuple(p.shape)}, got {found}")
    with torch.no_grad():
        for name, p in parameters.items():
            p.copy_(weights[name])
    for holder in _holders(model):
        holder.apply_masks()


def reinit(model: nn.Module, fresh: nn.Module) -> None:
    """Re-initialise ``model``'s survivors with fresh random values, keeping its masks: the
    values of ``fresh``, a newly built model of the same architecture (another seed)."""
    rewind(model, snapshot(fresh))


def model_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the mask of every maskable weight of ``model`` (all True where it has none),
    by parameter name: the support to hand ``random_masks`` before pruning."""
    return {f"{path}.{weight}" if path else weight: _mask_of(holder, weight).clone()
            for path, holder in model.named_modules() if _is_holder(holder)
            for weight in holder.maskable_weights}


def random_masks(model: nn.Module, support: Mapping[str, torch.Tensor], seed: int = 0,
                 weights: str = "both", readout: bool = False, per_gate: bool = False) -> None:
    """Replace each class's mask by a random one of the same density: as many weights as it
    keeps now, drawn uniformly from its entries inside ``support`` (``model_masks`` taken
    before pruning: the prior, or all True for a dense model). Structure-alone control."""
    generator = torch.Generator().manual_seed(seed)
    classes = weight_classes(model, weights, readout, per_gate)
    cleared, kept = [], []
    for c in classes:
        if c.key not in support:
            raise ValueError(f"support must hold a mask for {c.key!r} (take it with model_masks)")
        allowed = c.region & support[c.key].to(c.region.device)
        candidates = allowed.flatten().nonzero().squeeze(1)
        count = len(c.alive())
        if count > len(candidates):
            raise ValueError(f"support of {c.name} holds {len(candidates)} entries, fewer than the {count} kept")
        draw = torch.randperm(len(candidates), generator=generator)[:count]
        cleared.append(c.region.flatten().nonzero().squeeze(1))
        kept.append(candidates[draw.to(candidates.device)])
    _set_class_masks(classes, cleared, kept)


# ---------------------------------------------------------------------------------------
# robustness to further pruning
# ---------------------------------------------------------------------------------------


def accuracy(model: nn.Module, data: Any, device: str = "cpu") -> float:
    """``model``'s accuracy on ``data`` (an ``EncodedDataset``-like object): ``fit``'s ``test_acc``."""
    logits = predict(model, data, batch_size=1024, device=device)
    prepared = prepare_data(data, "data", logits.device)
    return task_accuracy(prepared.task, logits, prepared.targets, prepared.lengths, prepared.weights)


@dataclass(frozen=True)
class RobustnessCurve:
    """Accuracy at each fraction of the remaining weights pruned without retraining, and
    ``auc``: the area under it divided by the span of the fractions, i.e. the mean accuracy
    over the range (1 when no further pruning hurts)."""

    fractions: tuple[float, ...]
    accuracy: tuple[float, ...]
    auc: float


def robustness_curve(model: nn.Module, data: Any, fractions: Sequence[float] = tuple(i / 10 for i in range(10)),
                     scheme: str = "blinded", weights: str = "both", readout: bool = False,
                     per_gate: bool = False, seed: int = 0, device: str = "cpu") -> RobustnessCurve:
    """Accuracy of ``model`` on ``data`` as ``fractions`` (increasing, from 0) of its
    remaining weights are pruned by ``scheme`` without retraining (Van Gelder, Wortsman &
    Ehsani 2020). Each point prunes a copy; one ranking serves all, so the pruned sets are
    nested. ``model`` is left as it was."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) < 2 or fractions[0] != 0.0 or any(b <= a for a, b in zip(fractions, fractions[1:])) \
            or fractions[-1] > 1.0:
        raise ValueError(f"fractions must increase from 0 to at most 1 with at least two points, got {list(fractions)}")
    scores = []
    for f in fractions:
        pruned = copy.deepcopy(model)
        prune(pruned, scheme, f, weights, readout, per_gate, seed)
        scores.append(accuracy(pruned, data, device))
    area = sum((b - a) * (x + y) / 2 for a, b, x, y in zip(fractions, fractions[1:], scores, scores[1:]))
    return RobustnessCurve(fractions, tuple(scores), area / (fractions[-1] - fractions[0]))
