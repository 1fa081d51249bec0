"""The study's DAG-layered recurrent architecture, as plain data and as a torch module.

``LayeredStructure`` is what ``graphprior.priors.layered_structure`` produces from a graph
and what ``LayeredRNN`` builds from: layer widths and boolean masks between layers. It
knows no graph library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rnn_models.masked import make_rnn

SequenceBatch = Union[torch.Tensor, PackedSequence]


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


def _add_sequences(a: SequenceBatch, b: SequenceBatch) -> SequenceBatch:
    """Sum two layer outputs of the same layout (padded tensors or PackedSequences)."""
    if isinstance(a, PackedSequence):
        return a._replace(data=a.data + b.data)
    return a + b


class LayeredRNN(nn.Module):
    """The study's DAG-layered recurrent network, with correct gate tiling.

    One fused masked recurrent layer per DAG layer: layer 0 reads the input (dense input
    weights), layer ``k`` reads layer ``k-1``'s output sequence through the main-path mask,
    tiled over the gate blocks. Every skip connection ``s -> t`` is an extra masked
    recurrent layer of width ``widths[t]`` reading layer ``s``'s output sequence; its output
    sequence is added to layer ``t``'s before layer ``t`` feeds on. The output is the last
    layer's sequence (Stier, Darji & Granitzer 2021, arXiv 2107.12917; their code repeated
    mask rows per gate instead of tiling gate blocks, which we do not copy).

    ``structure.recurrent_masks[k]``, when given, masks the hidden-to-hidden weights of
    layer ``k`` and of every skip layer into ``k`` (they update the same nodes); otherwise
    they are dense, as in the study. Inputs are ``(B, T, F)`` with ``batch_first=True``,
    ``(T, B, F)`` otherwise, or a ``PackedSequence``; states start at zero.
    """

    def __init__(self, structure: LayeredStructure, input_size: int, cell: str = "rnn_tanh",
                 batch_first: bool = False, bias: bool = True) -> None:
        super().__init__()
        if not isinstance(structure, LayeredStructure):
            raise ValueError(f"structure must be a LayeredStructure, got {type(structure).__name__}")
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        self.structure = structure
        self.cell = cell
        self.batch_first = batch_first
        widths = structure.widths
        main = {c.target: c for c in structure.connections if not c.is_skip}
        self.layers = nn.ModuleList(
            self._layer(input_size if k == 0 else widths[k - 1], widths[k], k,
                        None if k == 0 else main[k].mask, bias)
            for k in range(structure.depth)
        )
        self.skips = nn.ModuleDict({
            _skip_name(c): self._layer(widths[c.source], widths[c.target], c.target, c.mask, bias)
            for c in structure.skip_connections
        })

    @property
    def output_size(self) -> int:
        """Features per step of the output sequence: the last layer's width."""
        return self.structure.widths[-1]

    def _layer(self, in_size: int, width: int, target: int, ih_mask: torch.Tensor | None,
               bias: bool) -> nn.RNNBase:
        recurrent = self.structure.recurrent_masks
        return make_rnn(self.cell, in_size, width, batch_first=self.batch_first, bias=bias,
                        ih_mask=ih_mask, hh_mask=None if recurrent is None else recurrent[target])

    def forward(self, input: SequenceBatch) -> tuple[SequenceBatch, tuple[Any, ...]]:
        """Return ``(output, states)``: the last layer's output sequence (same layout as
        ``input``) and the final state of every main-path layer (``(h, c)`` for LSTM)."""
        outputs: list[SequenceBatch] = []
        states = []
        for k, layer in enumerate(self.layers):
            out, state = layer(input if k == 0 else outputs[-1])
            for c in self.structure.skip_connections:
                if c.target == k:
                    out = _add_sequences(out, self.skips[_skip_name(c)](outputs[c.source])[0])
            outputs.append(out)
            states.append(state)
        return outputs[-1], tuple(states)


def _skip_name(connection: LayerConnection) -> str:
    return f"{connection.source}_to_{connection.target}"
