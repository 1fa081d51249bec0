"""Training hyper-parameters, defined and checked in one place.

``TrainConfig`` is what ``rnn_models.train.fit`` takes and what a sweep spec's ``[train]``
table becomes (``graphprior.spec.TrainSpec`` is derived from its fields and runs its
checks). This module imports no torch, so specs validate without loading it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
"""Optimizer names: ``torch.optim.Adam``, ``AdamW``, ``SGD``, ``RMSprop``."""
FUSED = ("adam", "adamw")
"""Optimizers ``TrainConfig.make_optimizer`` runs as torch's fused kernels where it can."""
MAX_EPOCHS = 100_000
DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")

_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "optimizer": (str,), "lr": _NUMBER, "weight_decay": _NUMBER, "momentum": _NUMBER,
    "batch_size": (int,), "epochs": (int,), "clip": (*_NUMBER, type(None)),
    "patience": (int, type(None)), "seed": (int,), "device": (str,), "bucket": (bool,),
}
"""The types each ``TrainConfig`` field accepts (bools are refused for numbers)."""


class ConfigError(ValueError):
    """A bad ``TrainConfig`` value: ``field`` names it, ``allowed`` says what is allowed."""

    def __init__(self, field: str, allowed: str, value: Any) -> None:
        super().__init__(f"{field} must be {allowed}, got {value!r}")
        self.field, self.allowed, self.value = field, allowed, value


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    ``clip`` is the maximal global gradient norm (None: no clipping). ``patience`` stops
    training after that many epochs without a lower test loss (None: run all epochs).
    ``bucket`` groups sequences of similar length into batches. ``momentum`` is used by
    sgd and rmsprop. ``seed`` seeds torch's global generators (dropout, batch order).
    ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (a ``torch.device`` is
    taken too).
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
        if type(self.device).__name__ == "device" and hasattr(self.device, "type"):  # a torch.device
            object.__setattr__(self, "device", str(self.device))
        for name, kinds in _FIELD_TYPES.items():
            value = getattr(self, name)
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                raise ConfigError(name, " or ".join("None" if k is type(None) else k.__name__ for k in kinds), value)
        checks = [
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {list(OPTIMIZERS)}"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("epochs", 1 <= self.epochs <= MAX_EPOCHS, f"in 1..{MAX_EPOCHS}"),
            ("clip", self.clip is None or self.clip > 0, "None or > 0"),
            ("patience", self.patience is None or self.patience >= 1, "None or >= 1"),
            ("seed", self.seed >= 0, ">= 0"),
            ("device", DEVICE.match(self.device) is not None, "'cpu', 'cuda', 'cuda:N' or 'mps'"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(name, allowed, getattr(self, name))

    def make_optimizer(self, parameters: Any) -> Any:
        """The configured ``torch.optim`` optimizer over ``parameters`` (anything torch's
        optimizers take); torch's fused (one-kernel) Adam or AdamW when every parameter is a
        floating tensor on a device it supports (the same update, far fewer calls for models
        of many small tensors). SGD stays unfused: its fused kernel refuses sparse gradients."""
        import torch

        parameters = list(parameters)
        kwargs: dict[str, Any] = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.optimizer in ("sgd", "rmsprop"):
            kwargs["momentum"] = self.momentum
        tensors = list(_tensors(parameters))
        if self.optimizer in FUSED and tensors and all(_fusable(p) for p in tensors):
            kwargs["fused"] = True
        names = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}
        return getattr(torch.optim, names[self.optimizer])(parameters, **kwargs)


def _tensors(parameters: list[Any]) -> Iterator[Any]:
    """The tensors of what torch's optimizers take: tensors, ``(name, tensor)`` pairs or
    parameter groups (dicts whose ``"params"`` is a tensor or an iterable of either)."""
    for item in parameters:
        if isinstance(item, dict):
            group = item["params"]
            yield from _tensors([group] if hasattr(group, "is_floating_point") else list(group))
        elif isinstance(item, tuple):
            yield item[1]
        else:
            yield item


def _fusable(parameter: Any) -> bool:
    """Whether torch's fused optimizers take ``parameter``: a floating tensor on the CPU or a
    CUDA device (torch >= 2.4 has CPU kernels)."""
    return parameter.is_floating_point() and parameter.device.type in ("cpu", "cuda")
