"""rnn_models: masked recurrent modules on torch's fused kernels, the study's layered
architecture, one training loop with hooks, and one engine per job (``rnn_models.engines``).
Depends on torch only; masks are bool tensors.

The names below load their module on first use (PEP 562), so ``rnn_models.config`` (the
training hyper-parameters) can be imported without torch. See docs/models.md for usage.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "choose_engine": "engines",
    "LayerConnection": "layered", "LayeredRNN": "layered", "LayeredStructure": "layered",
    "GATES": "masked", "MaskedGRU": "masked", "MaskedLSTM": "masked", "MaskedRNN": "masked", "Remask": "masked",
    "make_rnn": "masked", "open_forget_gate": "masked",
    "MaskedLinear": "mlp", "MaskedMLP": "mlp",
    "prune": "pruning", "iterative_pruning": "pruning", "robustness_curve": "pruning",
    "SET": "dynamic", "RigL": "dynamic", "DNW": "dynamic", "Schedule": "dynamic",
    "TrainConfig": "config",
    "History": "train", "Hook": "train", "NextSymbolModel": "train", "SequenceClassifier": "train",
    "TrainState": "train", "fit": "train", "predict": "train",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'rnn_models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rnn_models.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
