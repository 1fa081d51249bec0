"""The study's DAG-layered recurrent architecture, as plain data and as a torch module.

``LayeredStructure`` is what ``graphprior.priors.layered_structure`` produces from a graph
and what ``LayeredRNN`` builds from: layer widths and boolean masks between layers. It
knows no graph library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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
