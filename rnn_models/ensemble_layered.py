"""Train K layered DAG models (the study's architecture) at once, as K ``fit`` runs would.

The models may differ in everything structural (DAG, layer widths, depth, skip
connections) but share the cell type, the input size and the head. Every connection of
every model is one *block*: a small recurrent layer of its target layer's width reading
its source layer's output (``rnn_models.layered.LayeredRNN`` runs a layer's blocks as one
fused call). Here DAG layer ``j`` of all K models is one call of
``rnn_models.batched.batched_recurrence_fm`` (the hoisted engine; ``ENGINES`` picks the
engine per cell type) over all their blocks into layer ``j`` (two calls, narrow and wide
blocks, where that cuts the padding by >= 20 %, ``SPLIT_BELOW``):

* every layer's output is kept feature-major, ``(K, W_j, T, B)`` (a view of the engine's
  step-major storage), so a block's input is a gather over the model axis and the input
  projection of all its steps is one matrix product;
* widths are padded to the largest width in the call (units beyond a model's width have
  zero weights and biases and stay exactly zero, so they change nothing), inputs to the
  largest source width;
* parameters are stored model axis first, ``(K, S_j, G*W_j, in)`` with ``S_j`` the most
  blocks any model has into layer ``j``; missing blocks are all-zero and never computed
  (the live blocks are gathered for the call, a bucket's units are a narrow of every
  gate block, not a gather), so Adam, per-model gradient clipping and per-model zeroing
  are those of ``rnn_models.ensemble.EnsembleModel``, reused as is;
* gathers over the model axis are ``_take`` (``index_select`` with an ``index_add_``
  backward: autograd's own went through a ``scatter_add_`` that cost about 10 % of a
  training step); a gather of all models in order is skipped;
* block outputs are summed per model; a model shallower than the deepest one simply has
  no blocks in the deeper layers and is read at its own last layer.

No arithmetic mixes two models, so one model's NaN cannot reach another.

On a CPU, ``fit`` one model at a time on ``rnn_models.native``'s compiled network is now
faster for every cell type, so ``"auto"`` (``choose_layered_strategy``) uses this ensemble
only where those kernels are off or on other devices.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.functional import pad

from rnn_models import native
from rnn_models.batched import batched_recurrence, batched_recurrence_fm
from rnn_models.ensemble import EnsembleModel, EnsembleRNN, _EnsembleTrainer, _Run
from rnn_models.layered import LayeredRNN
from rnn_models.masked import GATES
from rnn_models.train import History, Metric, NextSymbolModel, SequenceClassifier, TrainConfig, fit, prepare_pair

_HEADS = (SequenceClassifier, NextSymbolModel)
ENGINES = {"rnn_tanh": "hoisted", "rnn_relu": "hoisted", "lstm": "hoisted", "gru": "hoisted"}
"""Which engine of ``rnn_models.batched`` runs a layered ensemble's blocks, per cell type
(``"hoisted"``: ``batched_recurrence_fm``; ``"stepwise"``: ``batched_recurrence``). The
hoisted one measured faster for every cell (docs/bench/layered.md); the stepwise one stays
reachable here for comparisons and for the test that both give the same ensemble."""
LAYERED_STRATEGIES = ("auto", "separate", "batched")
"""How ``fit_layered_ensemble`` trains: ``"batched"`` is the layered ensemble,
``"separate"`` calls ``fit`` per model, ``"auto"`` applies ``choose_layered_strategy``."""


def _padded_rows(gates: int, padded: int, width: int) -> torch.Tensor:
    """Rows of a ``width``-unit block in gate-stacked weights padded to ``padded`` units."""
    return (torch.arange(gates).unsqueeze(1) * padded + torch.arange(width)).flatten()


class _Block(NamedTuple):
    """One connection of one model: its model, its slot among the model's blocks into the
    layer, the layer it reads (-1: the input), its width and its source's width."""

    model: int
    slot: int
    source: int
    width: int
    source_width: int


def _fit_width(x: torch.Tensor, width: int, dim: int = -1) -> torch.Tensor:
    """``x`` with axis ``dim`` cut or zero-padded to ``width`` (cut entries are zero)."""
    have = x.shape[dim]
    if have >= width:
        return x.narrow(dim, 0, width)
    dim = dim % x.dim()
    return pad(x, (0, 0) * (x.dim() - 1 - dim) + (0, width - have))


class _Take(torch.autograd.Function):
    """``source.index_select(0, index)`` whose backward is one ``index_add_`` (autograd's
    own goes through a much slower ``scatter_add_``)."""

    @staticmethod
    def forward(ctx: Any, source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.shape = source.shape
        return source.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.shape).index_add_(0, index, grad), None


def _take(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return _Take.apply(source, index)


SPLIT_BELOW = 0.8
"""A layer's blocks go into two calls (narrow and wide) when that leaves at most this
fraction of the padded units of one call (measured: docs/bench/layered.md)."""


def _width_buckets(blocks: list[_Block], below: float = SPLIT_BELOW) -> list[list[_Block]]:
    """Split a layer's blocks into at most two calls, narrow and wide, where that cuts the
    padded units (the ensemble's memory traffic) to at most ``below`` of one call's."""
    widths = sorted({block.width for block in blocks})
    whole = len(blocks) * widths[-1]
    best, split = whole, None
    for limit in widths[:-1]:
        small = sum(1 for block in blocks if block.width <= limit)
        cost = small * limit + (len(blocks) - small) * widths[-1]
        if cost < best:
            best, split = cost, limit
    if split is None or best > below * whole:
        return [list(blocks)]
    return [[b for b in blocks if b.width <= split], [b for b in blocks if b.width > split]]


def _check_layered(rnns: Sequence[nn.Module]) -> None:
    """Raise ValueError unless all modules are LayeredRNN of one cell, input size and bias."""
    if len(rnns) < 1:
        raise ValueError("models must hold at least one model")
    for position, rnn in enumerate(rnns):
        if not isinstance(rnn, LayeredRNN):
            raise ValueError(f"models[{position}].rnn must be a LayeredRNN, got {type(rnn).__name__}")
    signature = (rnns[0].cell, rnns[0].input_size, rnns[0].bias)
    for position, rnn in enumerate(rnns):
        if (rnn.cell, rnn.input_size, rnn.bias) != signature:
            raise ValueError(
                f"models[{position}].rnn has (cell, input_size, bias) = {(rnn.cell, rnn.input_size, rnn.bias)}, "
                f"but models[0].rnn has {signature}: a layered ensemble needs them equal"
            )


class LayeredEnsembleRNN(nn.Module):
    """K ``LayeredRNN`` (one cell type and input size) run as one module; see the module doc.

    ``forward(inputs)`` takes one batch-first input ``(B, T, in)`` shared by all models and
    returns ``(K, B, T, W)``: model k's own last layer, zero-padded to the widest last layer
    ``W``. Parameters ``weight_ih_l{j}`` ``(K, S_j, G*W_j, I_j)``, ``weight_hh_l{j}``,
    ``bias_*_l{j}`` and masks ``weight_*_l{j}_mask`` hold layer ``j`` of all models.
    """

    strategy = "batched"  # no cross-model arithmetic (read by rnn_models.ensemble's trainer)

    def __init__(self, rnns: Sequence[LayeredRNN]) -> None:
        super().__init__()
        _check_layered(rnns)
        first = rnns[0]
        self.cell, self.gates, self.input_size = first.cell, GATES[first.cell], first.input_size
        self.num_models = len(rnns)
        self.depths = [r.structure.depth for r in rnns]
        self.padded = [max(r.structure.widths[j] for r in rnns if r.structure.depth > j)
                       for j in range(max(self.depths))]
        self.weight_names: list[str] = []
        self.plans = [self._plan_layer(rnns, j) for j in range(len(self.padded))]
        ends = sorted(set(self.depths))
        for end in ends:
            members = torch.tensor([k for k, d in enumerate(self.depths) if d == end])
            self.register_buffer(f"ending_at_{end}", members, persistent=False)
        order = torch.cat([getattr(self, f"ending_at_{end}") for end in ends]).argsort()
        self.register_buffer("model_order", order, persistent=False)
        self._load_from(rnns)
        self.apply_masks()

    @property
    def output_size(self) -> int:
        """Width ``W`` of the output: the widest last layer among the models."""
        return max(self.padded[d - 1] for d in self.depths)

    def _plan_layer(self, rnns: Sequence[LayeredRNN], j: int) -> list[dict[str, Any]]:
        """Register layer ``j``'s parameters and masks; return its calls (``_width_buckets``),
        each a dict of ``width``, ``in_width``, ``groups`` (source layer, name of the buffer
        of its models in call order, None when that is all models in order), the names of
        its index buffers ``live`` (flat ``k * S_j + b`` of each block) and ``owner`` (each
        block's model), ``rows`` (True when the bucket is narrower than the layer) and
        ``main`` (True when its first K blocks are every model's main path, in model
        order; the other blocks' models are then the buffer ``skips_l{j}_call{c}``).
        Blocks are ordered main paths first, then by source and model."""
        blocks = [_Block(k, b, source, rnn.structure.widths[j], self._source_width(rnn, source))
                  for k, rnn in enumerate(rnns) if rnn.structure.depth > j
                  for b, source in enumerate(rnn.block_sources(j))]
        slots = 1 + max(block.slot for block in blocks)
        rows, units = self.gates * self.padded[j], self.padded[j]
        shapes = {"weight_ih": (max(block.source_width for block in blocks),), "weight_hh": (units,)}
        if rnns[0].bias:
            shapes |= {"bias_ih": (), "bias_hh": ()}
        for kind, tail in shapes.items():
            name = f"{kind}_l{j}"
            self.register_parameter(name, nn.Parameter(torch.zeros(self.num_models, slots, rows, *tail)))
            self.weight_names.append(name)
            if kind.startswith("weight"):
                self.register_buffer(name + "_mask", torch.zeros(self.num_models, slots, rows, *tail, dtype=torch.bool))
        calls = []
        for c, bucket in enumerate(_width_buckets(blocks)):
            bucket.sort(key=lambda block: (block.slot > 0, block.source, block.model))  # main paths first
            width = max(block.width for block in bucket)
            prefix = f"l{j}_call{c}"
            call = {"width": width, "in_width": max(block.source_width for block in bucket), "groups": [],
                    "live": f"live_{prefix}", "owner": f"owner_{prefix}",
                    "rows": width != units}
            live = torch.tensor([b.model * slots + b.slot for b in bucket])
            self.register_buffer(call["live"], live, persistent=False)
            self.register_buffer(call["owner"], torch.tensor([b.model for b in bucket]), persistent=False)
            for g, source in enumerate(dict.fromkeys(block.source for block in bucket)):  # in block order
                name = f"models_{prefix}_group{g}"
                members = [b.model for b in bucket if b.source == source]
                self.register_buffer(name, torch.tensor(members), persistent=False)
                call["groups"].append((source, None if members == list(range(self.num_models)) else name))
            # the leading blocks are every model's main path, in model order: the layer's
            # output starts as them, and the other blocks are added (no zero buffer)
            call["main"] = (width == units and len(bucket) >= self.num_models
                            and [b.model for b in bucket[: self.num_models]] == list(range(self.num_models))
                            and all(b.slot == 0 for b in bucket[: self.num_models]))
            if call["main"] and len(bucket) > self.num_models:
                skips = torch.tensor([b.model for b in bucket[self.num_models:]])
                self.register_buffer(f"skips_{prefix}", skips, persistent=False)
            calls.append(call)
        return calls

    def _source_width(self, rnn: LayeredRNN, source: int) -> int:
        return self.input_size if source < 0 else rnn.structure.widths[source]

    def _block_pairs(self, rnn: LayeredRNN, k: int) -> Any:
        """For every block tensor of model ``k``: ``(its fused layer, its name there, its
        index there, our name, our index into [k, b])``."""
        for j, layer in enumerate(rnn.layers):
            rows = _padded_rows(self.gates, self.padded[j], rnn.structure.widths[j])
            for b in range(len(rnn.block_sources(j))):
                for name, index in rnn.block_slices(j, b).items():
                    ours = (rows,) if len(index) == 1 else \
                        (rows.unsqueeze(1), torch.arange(index[1].shape[1]).unsqueeze(0))
                    yield layer, name, index, name.replace("_l0", f"_l{j}"), (k, b) + ours

    @torch.no_grad()
    def _load_from(self, rnns: Sequence[LayeredRNN]) -> None:
        """Copy every block's weights and masks from the models into the padded layout."""
        for k, rnn in enumerate(rnns):
            for layer, name, index, ours, where in self._block_pairs(rnn, k):
                getattr(self, ours)[where] = getattr(layer, name)[index]
                if ours + "_mask" in self._buffers:
                    mask = layer.masks.get(name)
                    self._buffers[ours + "_mask"][where] = True if mask is None else mask[index]

    @torch.no_grad()
    def load_into(self, rnns: Sequence[LayeredRNN], models: Sequence[int] | None = None) -> None:
        """Copy the weights of ``models`` (default: all) back into their own modules."""
        for k in range(self.num_models) if models is None else models:
            for layer, name, index, ours, where in self._block_pairs(rnns[k], k):
                getattr(layer, name)[index] = getattr(self, ours)[where]

    def forward(self, inputs: torch.Tensor, strategy: str | None = None) -> torch.Tensor:
        """Outputs ``(K, B, T, W)`` of every model's last layer for batch-first ``inputs``
        ``(B, T, in)`` (``strategy`` is accepted for ``EnsembleModel`` and ignored); a view
        of the feature-major ``(K, W, T, B)`` layout every layer is computed in."""
        if inputs.dim() != 3 or inputs.shape[2] != self.input_size:
            raise ValueError(f"inputs must be (batch, time, {self.input_size}), got {tuple(inputs.shape)}")
        outputs: list[torch.Tensor] = []
        batch, steps = inputs.shape[:2]
        features = inputs.permute(2, 1, 0).contiguous()  # (in, T, B)
        for j, calls in enumerate(self.plans):
            if len(calls) == 1 and calls[0]["main"]:
                blocks = self._call(j, calls[0], features, outputs)
                main = blocks[: self.num_models]
                skips = self._buffers.get(f"skips_l{j}_call0")
                outputs.append(main if skips is None else main.index_add(0, skips, blocks[self.num_models:]))
                continue
            out = inputs.new_zeros(self.num_models, self.padded[j], steps, batch)
            for call in calls:
                blocks = self._call(j, call, features, outputs)
                out.narrow(1, 0, call["width"]).index_add_(0, getattr(self, call["owner"]), blocks)
            outputs.append(out)
        return self._last_layers(outputs).permute(0, 3, 2, 1)

    def _call(self, j: int, call: dict[str, Any], features: torch.Tensor,
              outputs: list[torch.Tensor]) -> torch.Tensor:
        """One ``batched_recurrence_fm`` over the blocks of one width bucket of layer ``j``:
        ``(N, width, T, B)``."""
        live, in_width = getattr(self, call["live"]), call["in_width"]
        if j == 0:
            x = features.unsqueeze(0).expand(len(live), -1, -1, -1)
        else:
            parts = [_fit_width(outputs[s] if models is None else _take(outputs[s], getattr(self, models)),
                                in_width, dim=1)
                     for s, models in call["groups"]]
            x = parts[0] if len(parts) == 1 else torch.cat(parts)
        weights = []
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            param = getattr(self, f"{kind}_l{j}", None)
            if param is None:
                weights.append(None)
                continue
            weight = _take(param.flatten(0, 1), live)
            if call["rows"]:  # the bucket's units of every gate block: a narrow, not a gather
                weight = weight.unflatten(1, (self.gates, self.padded[j])).narrow(2, 0, call["width"]).flatten(1, 2)
            if kind.startswith("weight"):
                weight = weight.narrow(2, 0, in_width if kind == "weight_ih" else call["width"])
            weights.append(weight)
        if ENGINES[self.cell] == "hoisted":
            return batched_recurrence_fm(self.cell, x, *weights)
        return batched_recurrence(self.cell, x.permute(0, 3, 2, 1), *weights).permute(0, 3, 2, 1)

    def _last_layers(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Each model's own last layer ``(K, W, T, B)``, padded to ``output_size``, in model order."""
        if len(set(self.depths)) == 1:
            return outputs[-1]
        width = self.output_size
        ends = sorted(set(self.depths))
        parts = [_fit_width(_take(outputs[end - 1], getattr(self, f"ending_at_{end}")), width, dim=1)
                 for end in ends]
        return _take(torch.cat(parts), self.model_order)

    # rnn_models.ensemble's bookkeeping works on this layout unchanged (model axis first).
    apply_masks = EnsembleRNN.apply_masks
    mask_gradients = EnsembleRNN.mask_gradients


class LayeredEnsembleModel(EnsembleModel):
    """K ``SequenceClassifier`` or K ``NextSymbolModel`` around ``LayeredRNN`` as one module.

    ``EnsembleModel`` with a ``LayeredEnsembleRNN`` core and read-outs padded to the widest
    last layer: ``forward(inputs, lengths)`` returns ``(K, B)`` or ``(K, B, T, V)`` logits,
    model k's slice equal to what model k alone returns.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        nn.Module.__init__(self)  # EnsembleModel's own __init__ builds a plain EnsembleRNN core
        kind = type(models[0]) if models else None
        if kind not in _HEADS or any(type(m) is not kind for m in models):
            raise ValueError(
                "models must all be SequenceClassifier or all NextSymbolModel, got "
                f"{sorted({type(m).__name__ for m in models})}"
            )
        self.classify = kind is SequenceClassifier
        self.rnn = LayeredEnsembleRNN([m.rnn for m in models])
        width = self.rnn.output_size
        self.readout_weight = nn.Parameter(torch.stack([_fit_width(m.readout.weight.detach(), width)
                                                        for m in models]))
        self.readout_bias = nn.Parameter(torch.stack([m.readout.bias.detach() for m in models]).clone())

    def load_into(self, models: Sequence[nn.Module], which: Sequence[int]) -> None:
        """Write the weights of the models numbered in ``which`` back into their own objects."""
        self.rnn.load_into([m.rnn for m in models], which)
        with torch.no_grad():
            for k in which:
                models[k].readout.weight.copy_(self.readout_weight[k, :, : models[k].readout.in_features])
                models[k].readout.bias.copy_(self.readout_bias[k])


class _LayeredTrainer(_EnsembleTrainer):
    """``rnn_models.ensemble``'s K-model ``fit`` loop with a ``LayeredEnsembleModel``."""

    def __init__(self, models: Sequence[nn.Module], task: str, config: TrainConfig,
                 metrics: dict[str, Metric]) -> None:
        # the state _EnsembleTrainer.__init__ sets, with our module instead of EnsembleModel
        self.models, self.task, self.config, self.metrics = models, task, config, metrics
        self.device = torch.device(config.device)
        for model in models:
            model.to(self.device)
        self.ensemble = LayeredEnsembleModel(models).to(self.device)
        self.optimizer = config.make_optimizer(self.ensemble.parameters())
        self.active = torch.ones(len(models), dtype=torch.bool, device=self.device)
        self.runs = [_Run(epochs=[]) for _ in models]
        self.start = time.perf_counter()


def choose_layered_strategy(cell: str, device: str) -> str:
    """What ``"auto"`` resolves to, from the measurements in docs/bench/layered.md.

    On a CPU, where ``rnn_models.native`` runs each model as one compiled network (float32),
    ``fit`` one model at a time is the faster way for every cell type: on 8 sampled
    ``paper`` models, 7.0 / 5.4 / 15.4 / 12.9 CPU-s per model (tanh, relu, LSTM, GRU)
    against 19.7 / 23.9 / 45.2 / 41.9 for the layered ensemble, whose padded batched
    products have no such kernels. So it is ``"separate"`` there, and ``"batched"`` where
    the compiled kernels are off (``native.ENABLED``) or on other devices, where one call
    per DAG layer for all models is what pays (unmeasured here: no GPU).
    """
    if cell not in GATES:
        raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}")
    on_cpu = torch.device(device).type == "cpu"
    return "separate" if on_cpu and native.ENABLED else "batched"


def fit_layered_ensemble(models: Sequence[nn.Module], train: Any, test: Any, config: TrainConfig,
                         metrics: dict[str, Metric] | None = None, strategy: str = "auto") -> list[History]:
    """Train K layered models at once; the result equals (to float tolerance)
    ``[fit(m, train, test, config, metrics) for m in models]``.

    ``models`` are all ``SequenceClassifier`` or all ``NextSymbolModel`` around
    ``LayeredRNN`` modules of one cell type and input size; their DAGs, widths and depths
    may differ. They share ``config`` (so the batch order too). Their trained weights are
    written back into them. Each ``History`` is what ``fit`` would return, except
    ``seconds``: the shared wall time until that model ended, divided by K. A model whose
    loss turns NaN/inf fails alone, as in ``rnn_models.ensemble.fit_ensemble``.
    ``strategy``: ``"batched"`` (the layered ensemble), ``"separate"`` (``fit`` per model)
    or ``"auto"`` (``choose_layered_strategy``).
    """
    if len(models) < 1:
        raise ValueError("models must hold at least one model")
    if strategy not in LAYERED_STRATEGIES:
        raise ValueError(f"strategy must be one of {LAYERED_STRATEGIES}, got {strategy!r}")
    if strategy == "auto":
        _check_layered([getattr(m, "rnn", None) for m in models])
        strategy = choose_layered_strategy(models[0].rnn.cell, config.device)
    if strategy == "separate":
        return [fit(model, train, test, config, metrics) for model in models]
    train_data, test_data = prepare_pair(train, test, config)
    return _LayeredTrainer(models, train_data.task, config, metrics or {}).run(train_data, test_data)
