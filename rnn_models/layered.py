"""The study's DAG-layered recurrent architecture, as plain data and as a torch module.

``LayeredStructure`` is what ``graphprior.priors.layered_structure`` produces from a graph
and what ``LayeredRNN`` builds from: layer widths and boolean masks between layers. It
knows no graph library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rnn_models import native
from rnn_models.engines import check_engine, choose_engine
from rnn_models.masked import GATES, make_rnn
from rnn_models.train import sequence_output

SequenceBatch = Union[torch.Tensor, PackedSequence]
GATE_MASKS = {
    "tiled": lambda mask, gates: mask.repeat(gates, 1),
    "row_repeated": lambda mask, gates: mask.repeat_interleave(gates, dim=0),
}
"""How a connection's ``(w, in)`` mask becomes the ``(G*w, in)`` mask of a block's input
weight: tiled per gate block (correct), or rows repeated in place (the study's bug)."""
_PARAMETERS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
"""A fused layer's parameters, in the order ``rnn_models.native.network_plan`` lays them out."""


@dataclass(frozen=True)
class LayerConnection:
    """Masked feed-forward wiring from DAG layer ``source`` into DAG layer ``target``.

    ``mask[i, j]`` is True when unit ``j`` of the source layer feeds unit ``i`` of the
    target layer. ``target == source + 1`` is the main path; larger gaps are skip
    connections, which the study realised as extra masked recurrent layers.
    """

    source: int
    target: int
    mask: torch.Tensor

    @property
    def is_skip(self) -> bool:
        return self.target - self.source > 1


@dataclass(frozen=True)
class LayeredStructure:
    """Layer widths (layer 0 = the DAG's sources) and the masked connections between them."""

    widths: tuple[int, ...]
    connections: tuple[LayerConnection, ...]
    recurrent_masks: tuple[torch.Tensor, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "connections", tuple(self.connections))
        if self.recurrent_masks is not None:
            object.__setattr__(self, "recurrent_masks", tuple(self.recurrent_masks))
        validate_structure(self)

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def skip_connections(self) -> tuple[LayerConnection, ...]:
        return tuple(c for c in self.connections if c.is_skip)


def validate_structure(structure: LayeredStructure) -> None:
    """Raise ValueError naming the first inconsistency of a layered structure."""
    widths = structure.widths
    if not widths:
        raise ValueError("widths must name at least one layer")
    if any(w < 1 for w in widths):
        raise ValueError(f"widths must all be >= 1, got {list(widths)}")
    seen: set[tuple[int, int]] = set()
    for c in structure.connections:
        if not 0 <= c.source < c.target < len(widths):
            raise ValueError(
                f"connection {c.source}->{c.target} must satisfy 0 <= source < target < {len(widths)}"
            )
        if (c.source, c.target) in seen:
            raise ValueError(f"connection {c.source}->{c.target} is given twice")
        seen.add((c.source, c.target))
        expected = (widths[c.target], widths[c.source])
        if tuple(c.mask.shape) != expected or c.mask.dtype != torch.bool:
            raise ValueError(
                f"mask of connection {c.source}->{c.target} must be a bool tensor of shape "
                f"{expected}, got {c.mask.dtype} {tuple(c.mask.shape)}"
            )
    for layer in range(1, len(widths)):
        if (layer - 1, layer) not in seen:
            raise ValueError(f"layer {layer} has no main-path connection from layer {layer - 1}")
    if structure.recurrent_masks is not None:
        if len(structure.recurrent_masks) != len(widths):
            raise ValueError(
                f"recurrent_masks must have one mask per layer ({len(widths)}), "
                f"got {len(structure.recurrent_masks)}"
            )
        for layer, (w, m) in enumerate(zip(widths, structure.recurrent_masks)):
            if tuple(m.shape) != (w, w) or m.dtype != torch.bool:
                raise ValueError(
                    f"recurrent_masks[{layer}] must be a bool tensor of shape ({w}, {w}), "
                    f"got {m.dtype} {tuple(m.shape)}"
                )


def _concat_features(parts: list[SequenceBatch]) -> SequenceBatch:
    """Concatenate layer outputs of the same layout along the feature axis."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], PackedSequence):
        return parts[0]._replace(data=torch.cat([p.data for p in parts], dim=-1))
    return torch.cat(parts, dim=-1)


def _sum_blocks(output: SequenceBatch, blocks: int, width: int) -> SequenceBatch:
    """Sum the ``blocks`` consecutive feature blocks of ``width`` units of a fused output."""
    if blocks == 1:
        return output
    if isinstance(output, PackedSequence):
        return output._replace(data=output.data.unflatten(-1, (blocks, width)).sum(-2))
    return output.unflatten(-1, (blocks, width)).sum(-2)


def _main_state(state: Any, width: int) -> Any:
    """The main block's part (its first ``width`` units) of a fused layer's final state."""
    if isinstance(state, tuple):
        return tuple(s[..., :width] for s in state)
    return state[..., :width]


def block_rows(gates: int, blocks: int, width: int, block: int) -> torch.Tensor:
    """Row indices of block ``block`` in the gate-stacked weights of a layer holding ``blocks``
    blocks of ``width`` units each: gate g's rows of the block are
    ``g * blocks * width + block * width + (0..width-1)``, in gate order."""
    base = torch.arange(gates).unsqueeze(1) * blocks * width + block * width
    return (base + torch.arange(width)).flatten()


class LayeredRNN(nn.Module):
    """The study's DAG-layered recurrent network, with correct gate tiling.

    In the study every connection into DAG layer ``j`` is its own masked recurrent layer of
    width ``widths[j]``: the main path from layer ``j-1`` (layer 0 reads the input with dense
    weights) and every skip connection ``s -> j``; their output sequences are summed into
    layer ``j``'s output, which the later layers read. Input masks are tiled over the gate
    blocks (Stier, Darji & Granitzer 2021, arXiv 2107.12917; their code repeated mask rows
    per gate instead of tiling gate blocks, which we do not copy).

    Here the ``1 + s_j`` recurrent layers into layer ``j`` (one *block* each, the main path
    first, then skips by ascending source) run as ONE fused masked recurrent module of
    hidden size ``(1 + s_j) * widths[j]`` (``self.layers[j]``): its input is the
    concatenation of the source layers' outputs (in block order), its ``weight_ih`` mask
    lets block ``b``'s units see only block ``b``'s source through that connection's mask,
    its ``weight_hh`` mask is block-diagonal, gate blocks tiled as torch stacks them (see
    ``block_rows``). The blocks never interact, so this computes exactly what the separate
    layers did, with one kernel call per DAG layer instead of one per connection. Each block
    is initialised like its own ``torch.nn`` layer of ``widths[j]`` units.

    ``structure.recurrent_masks[j]``, when given, masks the hidden-to-hidden weights of
    every block into layer ``j`` (they update the same nodes); otherwise they are dense, as
    in the study. Inputs are ``(B, T, F)`` with ``batch_first=True``, ``(T, B, F)``
    otherwise, or a ``PackedSequence``; states start at zero.

    ``engine``: ``"compiled"`` runs the whole network as one ``rnn_models.native`` call each
    way (batched float32 CPU tensors only), ``"torch"`` one torch kernel call per DAG layer
    (any input), ``"auto"`` (default) whichever ``rnn_models.engines.choose_engine`` picks
    for each input. Both compute the same function; the attribute may be changed later.

    ``gate_masks = "row_repeated"`` reproduces the study's bug: each connection mask's rows
    repeated ``gates`` times in place (``np.repeat(mask, gates, 0)``), so row ``r`` of a
    block's ``(G*w, in)`` input weight gets mask row ``r // G`` instead of ``r % w``; the
    default ``"tiled"`` repeats the whole mask per gate block. Plain RNN cells (one gate)
    are the same either way.
    """

    def __init__(self, structure: LayeredStructure, input_size: int, cell: str = "rnn_tanh",
                 batch_first: bool = False, bias: bool = True, engine: str = "auto",
                 gate_masks: str = "tiled") -> None:
        super().__init__()
        if not isinstance(structure, LayeredStructure):
            raise ValueError(f"structure must be a LayeredStructure, got {type(structure).__name__}")
        if gate_masks not in GATE_MASKS:
            raise ValueError(f"gate_masks must be one of {list(GATE_MASKS)}, got {gate_masks!r}")
        self.gate_masks = gate_masks
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        if cell not in GATES:
            raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}")
        self.structure = structure
        self.cell = cell
        self.input_size = input_size
        self.batch_first = batch_first
        self.bias = bias
        self.engine = check_engine("layered", engine)
        self.connections = tuple(
            tuple(sorted((c for c in structure.connections if c.target == j), key=lambda c: (c.is_skip, c.source)))
            for j in range(structure.depth))
        self._sources = tuple((-1,) if j == 0 else tuple(c.source for c in self.connections[j])
                              for j in range(structure.depth))
        self.layers = nn.ModuleList(self._fused_layer(j) for j in range(structure.depth))
        self._native_plan = self._plan()

    def __setstate__(self, state: dict) -> None:
        """Unpickling: a model saved before ``_native_plan`` or ``engine`` existed gets them."""
        super().__setstate__(state)
        if "_native_plan" not in self.__dict__:
            self._native_plan = self._plan()
        self.__dict__.setdefault("engine", "auto")

    @property
    def output_size(self) -> int:
        """Features per step of the output sequence: the last layer's width."""
        return self.structure.widths[-1]

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    def block_sources(self, layer: int) -> tuple[int, ...]:
        """DAG layer each block of ``layers[layer]`` reads, in block order (-1: the input)."""
        return self._sources[layer]

    def block_slices(self, layer: int, block: int) -> dict[str, tuple[torch.Tensor, ...]]:
        """Where one block lives in ``layers[layer]``'s weights: for every weight and bias
        name, an index such that ``tensor[index]`` is the block's own recurrent layer's
        tensor (``weight_ih_l0`` ``(G*w, in_b)``, ``weight_hh_l0`` ``(G*w, w)``, biases
        ``(G*w,)``), for the parameters, their gradients or their masks alike."""
        sources = self.block_sources(layer)
        if not 0 <= block < len(sources):
            raise ValueError(f"block must be in 0..{len(sources) - 1} for layer {layer}, got {block}")
        widths = [self.input_size if s < 0 else self.structure.widths[s] for s in sources]
        width, start = self.structure.widths[layer], sum(widths[:block])
        rows = block_rows(self.gates, len(sources), width, block)
        columns = {"weight_ih_l0": torch.arange(start, start + widths[block]),
                   "weight_hh_l0": torch.arange(block * width, (block + 1) * width)}
        index: dict[str, tuple[torch.Tensor, ...]] = {
            name: (rows.unsqueeze(1), cols.unsqueeze(0)) for name, cols in columns.items()}
        if self.bias:
            index |= {"bias_ih_l0": (rows,), "bias_hh_l0": (rows,)}
        return index

    def parameter_count(self) -> int:
        """Weights and biases of all blocks: what the per-connection layers of the study
        hold. The off-block entries of the fused weights are structural zeros, not counted."""
        return sum(
            torch.broadcast_shapes(*(i.shape for i in index)).numel()
            for j in range(self.structure.depth) for b in range(len(self.block_sources(j)))
            for index in self.block_slices(j, b).values()
        )

    def _fused_layer(self, layer: int) -> nn.RNNBase:
        """The masked recurrent module of all blocks into ``layer`` (see the class doc)."""
        width, gates = self.structure.widths[layer], self.gates
        sources = self.block_sources(layer)
        blocks = len(sources)
        in_widths = [self.input_size if s < 0 else self.structure.widths[s] for s in sources]
        recurrent = self.structure.recurrent_masks
        unit_hh = torch.ones(width, width, dtype=torch.bool) if recurrent is None else recurrent[layer]
        ih_mask = torch.zeros(gates * blocks * width, sum(in_widths), dtype=torch.bool)
        hh_mask = torch.zeros(gates * blocks * width, blocks * width, dtype=torch.bool)
        for b in range(blocks):
            where = self.block_slices(layer, b)
            conn = None if layer == 0 else self.connections[layer][b].mask
            ih_mask[where["weight_ih_l0"]] = True if conn is None else GATE_MASKS[self.gate_masks](conn, gates)
            hh_mask[where["weight_hh_l0"]] = unit_hh.repeat(gates, 1)
        module = make_rnn(self.cell, sum(in_widths), blocks * width, batch_first=self.batch_first, bias=self.bias,
                          ih_mask=None if bool(ih_mask.all()) else ih_mask,
                          hh_mask=None if bool(hh_mask.all()) else hh_mask)
        bound = 1.0 / math.sqrt(width)  # torch's init of a layer of `width` units
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.uniform_(-bound, bound)
        module.apply_masks()
        return module

    def forward(self, input: SequenceBatch) -> tuple[SequenceBatch, tuple[Any, ...]]:
        """Return ``(output, states)``: the last layer's output sequence (same layout as
        ``input``) and the final state of every main-path block (``(h, c)`` for LSTM), on the
        engine ``engine_for(input)`` names."""
        if self.engine_for(input) == "compiled":
            return self._forward_native(input)
        output, states = self.forward_state(input)
        return output, tuple(_main_state(state, width) for state, width in zip(states, self.structure.widths))

    def forward_state(self, input: SequenceBatch, hx: tuple[Any, ...] | None = None) -> tuple[SequenceBatch, tuple]:
        """``forward`` on torch's kernels from the fused layers' states ``hx`` (None: zeros),
        returning the output and every fused layer's final state, all blocks: what
        ``hx`` takes back, so a stream can be continued window by window (stateful
        training; the compiled network starts from zero states only)."""
        if hx is not None and len(hx) != self.structure.depth:
            raise ValueError(f"hx must hold one state per layer ({self.structure.depth}), got {len(hx)}")
        outputs: list[SequenceBatch] = []
        states = []
        for j, layer in enumerate(self.layers):
            sources = self.block_sources(j)
            x = input if j == 0 else _concat_features([outputs[s] for s in sources])
            out, state = layer(x, None if hx is None else hx[j])
            outputs.append(_sum_blocks(out, len(sources), self.structure.widths[j]))
            states.append(state)
        return outputs[-1], tuple(states)

    def engine_for(self, input: SequenceBatch) -> str:
        """The engine that runs ``input``: ``self.engine``, or for ``"auto"`` the compiled
        network for a batched tensor where ``choose_engine`` picks it (float32 CPU, no
        autocast) and torch's kernels otherwise (a ``PackedSequence``, an unbatched input,
        float64, CUDA, autocast). ``"compiled"`` with an input it cannot run is an error."""
        if self.engine == "torch":
            return "torch"
        batched = isinstance(input, torch.Tensor) and input.dim() == 3
        choice = "torch" if not batched else choose_engine(
            "layered", input.device, input.dtype, autocast=torch.is_autocast_enabled(input.device.type))
        if self.engine == "compiled" and choice != "compiled":
            found = type(input).__name__ if not isinstance(input, torch.Tensor) else \
                f"a {input.dim()}-d {input.dtype} tensor on {input.device}"
            raise ValueError(f"engine 'compiled' needs a batched float32 CPU tensor outside autocast, got {found}; "
                             "use engine='torch' or 'auto'")
        return choice

    def _forward_native(self, input: torch.Tensor) -> tuple[torch.Tensor, tuple[Any, ...]]:
        """``forward`` as one ``rnn_models.native.network`` call: every layer feature-major
        ``(F, T, B)``, compiled, one call forward and one backward for the whole network."""
        plan = self._native_plan
        x = input.permute(2, 1, 0) if self.batch_first else input.permute(2, 0, 1)
        parameters = [getattr(layer, name) for layer in self.layers for name in _PARAMETERS[: 4 if self.bias else 2]]
        output, states, cells, _ = native.network(plan, x, parameters)
        last = states[:, -1].t().unsqueeze(0)  # (1, B, rows): every layer's final states, as torch returns them
        last_cells = cells[:, -1].t().unsqueeze(0) if self.cell == "lstm" else None
        finals = []
        for j, width in enumerate(self.structure.widths):
            start = plan.state_row(j)
            final = last[..., start:start + width]
            finals.append((final, last_cells[..., start:start + width]) if last_cells is not None else final)
        return (output.permute(2, 1, 0) if self.batch_first else output.permute(1, 2, 0)), tuple(finals)

    def _plan(self) -> native.NetworkPlan:
        """Where ``_forward_native`` reads and writes: block k of layer j reads its source
        layer's output (or the input) through the next columns of ``weight_ih``, in block order."""
        widths = self.structure.widths
        rows = [self.input_size + sum(widths[:s]) for s in range(len(widths))]
        reads = []
        for j in range(self.structure.depth):
            sources = [(0, self.input_size) if s < 0 else (rows[s], widths[s]) for s in self.block_sources(j)]
            columns = np.cumsum([0] + [count for _, count in sources[:-1]])
            reads.append([(first, count, int(column)) for (first, count), column in zip(sources, columns)])
        return native.network_plan(self.cell, self.input_size, widths, reads, bias=self.bias)


class PerConnectionLayeredRNN(nn.Module):
    """The study's layout, one masked recurrent layer per connection (the former
    ``LayeredRNN``): ``layers[k]`` is the main path into DAG layer k, ``skips["s_to_t"]`` a
    skip connection; outputs of the skips into a layer are added to its main output.
    Batch-first padded inputs only. The reference ``LayeredRNN`` is tested against, and
    the layout benchmarks/bench_layered.py measures it against (one kernel call per
    connection instead of one per DAG layer).
    """

    def __init__(self, structure: LayeredStructure, input_size: int, cell: str) -> None:
        super().__init__()
        self.structure = structure
        widths, recurrent = structure.widths, structure.recurrent_masks
        main = {c.target: c for c in structure.connections if not c.is_skip}

        def layer(in_size: int, target: int, ih_mask: torch.Tensor | None) -> nn.RNNBase:
            return make_rnn(cell, in_size, widths[target], batch_first=True, ih_mask=ih_mask,
                            hh_mask=None if recurrent is None else recurrent[target])

        self.layers = nn.ModuleList(
            layer(input_size if k == 0 else widths[k - 1], k, None if k == 0 else main[k].mask)
            for k in range(structure.depth))
        self.skips = nn.ModuleDict({f"{c.source}_to_{c.target}": layer(widths[c.source], c.target, c.mask)
                                    for c in structure.skip_connections})

    @property
    def output_size(self) -> int:
        return self.structure.widths[-1]

    def block_module(self, target: int, source: int) -> nn.RNNBase:
        """The recurrent layer of the connection ``source -> target`` (-1: the input)."""
        return self.layers[target] if source in (-1, target - 1) else self.skips[f"{source}_to_{target}"]

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        outputs = []
        for k, layer in enumerate(self.layers):
            out = layer(input if k == 0 else outputs[-1])[0]
            for c in self.structure.skip_connections:
                if c.target == k:
                    out = out + self.skips[f"{c.source}_to_{c.target}"](outputs[c.source])[0]
            outputs.append(out)
        return outputs[-1], ()


    @torch.no_grad()
    def copy_into(self, fused: "LayeredRNN") -> None:
        """Give ``fused`` (of the same structure and cell) exactly these weights, block by block."""
        for j, layer in enumerate(fused.layers):
            for b, source in enumerate(fused.block_sources(j)):
                own = self.block_module(j, source)
                for name, index in fused.block_slices(j, b).items():
                    getattr(layer, name)[index] = getattr(own, name)


class EmbeddedInput(nn.Module):
    """A recurrent module behind a trainable symbol embedding, as the study fed its network.

    The study (Stier, Darji & Granitzer 2021) embedded each symbol with ``nn.Embedding`` into
    as many features as its first DAG layer has units (``features``) before the recurrent
    layers. Here the embedding is a bias-free linear map of the one-hot input, initialised
    N(0, 1) like ``nn.Embedding``: on a symbol it is the same lookup, and a pad step (all
    zeros) stays zero. ``rnn`` takes ``features`` inputs; ``batch_first``, ``output_size``
    and ``engine`` are the wrapped module's.

    ``pad=True`` feeds pad steps the study's pad symbol instead: its code 0 had an
    embedding like any symbol (``pad_embedding``, N(0, 1), trained), which only matters
    where a state after pad steps is read (``PaddedPositionClassifier``).
    """

    def __init__(self, rnn: nn.Module, input_size: int, features: int, pad: bool = False) -> None:
        super().__init__()
        if input_size < 1 or features < 1:
            raise ValueError(f"input_size and features must be >= 1, got {input_size} and {features}")
        self.embedding = nn.Linear(input_size, features, bias=False)
        nn.init.normal_(self.embedding.weight)
        if pad:
            self.pad_embedding = nn.Parameter(torch.randn(features))
        self.rnn = rnn
        self.batch_first = getattr(rnn, "batch_first", False)

    @property
    def output_size(self) -> int:
        """Features per step of the output sequence: the wrapped module's."""
        return int(self.rnn.output_size)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The wrapped module's ``(output, states)`` on the embedded input."""
        embedded = self.embedding(input)
        if hasattr(self, "pad_embedding"):
            is_pad = (input.sum(-1, keepdim=True) == 0).to(embedded.dtype)
            embedded = embedded + is_pad * self.pad_embedding
        return self.rnn(embedded)


class PaddedPositionClassifier(nn.Module):
    """The study's readout, a bug kept as an option: one logit per sequence from the
    recurrent output at the batch's last (padded) step, ``output[-1]`` in the study's code,
    so every sequence shorter than its batch's longest is scored on a state that has read
    pad steps after its end. ``rnn.SequenceClassifier`` reads each sequence's true last
    step instead. Same attributes (``rnn``, ``readout``) and call as that class.
    """

    def __init__(self, rnn: nn.Module, output_size: int | None = None) -> None:
        super().__init__()
        self.rnn = rnn
        self.readout = nn.Linear(output_size or int(rnn.output_size), 1)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.readout(sequence_output(self.rnn, inputs, lengths)[:, -1]).squeeze(1)
