"""A masked multi-layer perceptron, and fixed-size data in the shape ``fit`` trains on.

``MaskedLinear`` keeps the mask conventions of ``rnn_models.masked``: a boolean buffer
``weight_mask``, a gradient hook that zeroes the gradient outside it, and ``mask_pairs()``,
so ``fit``'s ``Remask`` hook re-zeroes masked weights after every optimizer step.
``MaskedMLP`` stacks them (ReLU between layers; the last layer is ``readout``).

``fit`` trains sequence models, so a fixed-size example (a digit image) travels as a
sequence of one step: ``FixedInputs`` holds ``(n, 1, F)`` inputs, lengths 1 and one-hot
``(n, 1, C)`` targets under task ``next_symbol``. ``fit`` then trains C one-vs-rest
sigmoid outputs (binary cross-entropy averaged over the classes, not a softmax), and its
``test_acc`` is the fraction of examples whose true class gets a strictly higher logit than
every other class: argmax accuracy, with ties counted wrong. No second training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rnn_models.masked import GradientMask, full_mask, mask_scale

_WEIGHT, _MASK = "weight", "weight_mask"


class MaskedLinear(nn.Linear):
    """``torch.nn.Linear`` with an optional boolean ``mask`` of the weight's shape
    ``(out_features, in_features)``; masked weights stay exactly zero (see module doc)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 mask: torch.Tensor | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._mask_cache: dict[str, tuple[torch.Tensor, int, torch.Tensor]] = {}
        self._hooked = False
        if mask is not None:
            self.set_mask(_WEIGHT, mask)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "MaskedLinear":
        """A ``MaskedLinear`` holding a copy of ``linear``'s weights (and no mask)."""
        masked = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        masked.load_state_dict(linear.state_dict())
        return masked.to(linear.weight.device, linear.weight.dtype)

    @property
    def maskable_weights(self) -> list[str]:
        """The one weight that can carry a mask."""
        return [_WEIGHT]

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``{"weight": mask}`` when masked, else empty."""
        return {_WEIGHT: self._buffers[_MASK]} if _MASK in self._buffers else {}

    def set_mask(self, weight_name: str, mask: torch.Tensor | None) -> None:
        """Set (or, with None, remove) the weight's mask and apply it at once."""
        if weight_name != _WEIGHT:
            raise ValueError(f"weight_name must be {_WEIGHT!r}, got {weight_name!r}")
        if mask is None:
            self._buffers.pop(_MASK, None)
            return
        full = full_mask(mask, tuple(self.weight.shape), 1, "mask of weight").to(self.weight.device)
        if _MASK in self._buffers:
            self._buffers[_MASK] = full
        else:
            self.register_buffer(_MASK, full)
        if not self._hooked:
            self.weight.register_hook(GradientMask(self, _WEIGHT))
            self._hooked = True
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the masked weights in place."""
        if _MASK in self._buffers:
            self.weight.masked_fill_(~self._buffers[_MASK], 0.0)

    def scale(self, name: str) -> torch.Tensor:
        """The mask as 0/1 in the weight's dtype (cached; what ``GradientMask`` multiplies)."""
        return mask_scale(self._mask_cache, name, self._buffers[_MASK], self.weight.dtype)

    def mask_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, 0/1 mask) when masked: what ``Remask`` multiplies."""
        return [(self.weight, self.scale(_WEIGHT))] if _MASK in self._buffers else []

    def reset_parameters(self) -> None:
        """Re-initialise like torch, then zero the masked weights again."""
        super().reset_parameters()
        if hasattr(self, "_mask_cache"):  # not yet during nn.Linear's constructor
            self.apply_masks()

    def __getstate__(self) -> dict:
        """Pickle and deepcopy without the cached 0/1 mask (rebuilt on demand)."""
        state = super().__getstate__()
        state["_mask_cache"], state["_hooked"] = {}, False
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickling and deepcopy drop tensor hooks: put the gradient mask back."""
        super().__setstate__(state)
        if _MASK in self._buffers:
            self.weight.register_hook(GradientMask(self, _WEIGHT))
            self._hooked = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """Load a mask too: one in ``state_dict`` replaces ours (also when we had none); one
        it lacks is kept. The loaded weight is re-masked at once."""
        key = prefix + _MASK
        if key in state_dict:
            self.set_mask(_WEIGHT, state_dict[key].to(torch.bool))
        elif _MASK in self._buffers:
            state_dict[key] = self._buffers[_MASK]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self.apply_masks()


class MaskedMLP(nn.Module):
    """Fully connected layers of ``sizes`` (input, hidden..., classes) with ReLU between
    them, every layer a ``MaskedLinear`` (the last one is ``readout``).

    ``forward(inputs, lengths)`` maps ``(B, T, F)`` to ``(B, T, C)`` logits step by step,
    the signature ``fit`` calls; with ``FixedInputs`` data T is 1.
    """

    def __init__(self, sizes: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must be at least two layer sizes >= 1 (input, ..., classes), got {sizes}")
        self.sizes = tuple(sizes)
        self.hidden = nn.ModuleList(MaskedLinear(a, b, bias) for a, b in zip(sizes[:-2], sizes[1:-1]))
        self.readout = MaskedLinear(sizes[-2], sizes[-1], bias)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = inputs
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.readout(x)


@dataclass(frozen=True)
class FixedInputs:
    """Fixed-size examples as one-step sequences for ``fit`` (see module doc): ``inputs``
    ``(n, 1, F)`` float, ``lengths`` ones, ``targets`` one-hot ``(n, 1, C)``, ``labels``
    ``(n,)`` the class indices."""

    inputs: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor
    task: str = "next_symbol"
    weights: torch.Tensor | None = None

    @classmethod
    def from_arrays(cls, features, labels, classes: int | None = None) -> "FixedInputs":
        """From ``(n, F)`` features and ``(n,)`` integer labels in ``0..classes-1``
        (default: ``max(labels) + 1``); anything ``torch.as_tensor`` takes."""
        x = torch.as_tensor(features, dtype=torch.float32)
        y = torch.as_tensor(labels).long()
        if x.dim() != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise ValueError(f"features must be (n, F) and labels (n,) with n >= 1, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        classes = int(y.max()) + 1 if classes is None else classes
        if int(y.min()) < 0 or int(y.max()) >= classes:
            raise ValueError(f"labels must be in 0..{classes - 1}, got {int(y.min())}..{int(y.max())}")
        targets = nn.functional.one_hot(y, classes).float().unsqueeze(1)
        return cls(x.unsqueeze(1), torch.ones(len(y), dtype=torch.long), targets, y)

    @property
    def classes(self) -> int:
        return self.targets.shape[-1]

    @property
    def features(self) -> int:
        return self.inputs.shape[-1]

    def __len__(self) -> int:
        return self.inputs.shape[0]


def mask_readout(model: nn.Module) -> nn.Module:
    """Replace ``model.readout`` (a ``torch.nn.Linear``, as in ``SequenceClassifier`` and
    ``NextSymbolModel``) by a ``MaskedLinear`` holding its weights, so the readout can be
    pruned; returns ``model``. Build the optimizer after this call (``fit`` does)."""
    linear = getattr(model, "readout", None)
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"model must have a torch.nn.Linear attribute 'readout', got {type(linear).__name__}")
    if not isinstance(linear, MaskedLinear):
        model.readout = MaskedLinear.from_linear(linear)
    return model
