"""rnn_models: masked recurrent modules on torch's fused kernels, the study's layered
architecture, and one training loop. Depends on torch only; masks are bool tensors.

See docs/models.md for usage.
"""

from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure
from rnn_models.masked import GATES, MaskedGRU, MaskedLSTM, MaskedRNN, make_rnn
from rnn_models.train import History, NextSymbolModel, SequenceClassifier, TrainConfig, fit

__all__ = [
    "GATES",
    "History",
    "LayerConnection",
    "LayeredRNN",
    "LayeredStructure",
    "MaskedGRU",
    "MaskedLSTM",
    "MaskedRNN",
    "NextSymbolModel",
    "SequenceClassifier",
    "TrainConfig",
    "fit",
    "make_rnn",
]
