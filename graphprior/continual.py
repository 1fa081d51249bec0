"""Continual Reber as Gers, Schmidhuber & Cummins (2000) defined it: train on parallel
unbroken streams, then run the trained network over one long fresh stream with no reset
and report the paper's measures. ``resets=True`` is the paper's comparison condition,
"external reset": the state is zeroed at every string start, in training and evaluation.

The pieces live where they belong: the streams and the measures in ``reber``
(``reber.tasks.stream_data``, ``reber.metrics.stream_report``), carrying the state from
window to window in ``rnn_models`` (``NextSymbolModel(stateful=True)``, ``fit``,
``predict``); this module joins them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reber.grammar import EMBEDDED_REBER, ContinualReber, Grammar, get_grammar
from reber.metrics import stream_report
from graphprior.spec import STREAM_EVAL_WINDOW
from reber.tasks import stream_data
from rnn_models.train import predict

STREAM_SYMBOLS = 100_000
"""Length of the evaluation stream (the paper ran its test streams to 10^5 symbols)."""


def evaluate_stream(model: torch.nn.Module, symbols: int = STREAM_SYMBOLS, seed: int = 0,
                    grammar: str | Grammar = EMBEDDED_REBER, window: int = STREAM_EVAL_WINDOW,
                    device: str = "cpu", resets: bool = False) -> dict[str, float]:
    """Run ``model`` (a stateful ``NextSymbolModel``) over one fresh seeded stream of
    ``symbols`` symbols from a zero state, never reset (read ``window`` symbols per call,
    the state carried between calls), and return ``reber.metrics.stream_report``'s
    measures: ``solved``, ``symbols_before_error``, ``strings_before_error``,
    ``symbol_accuracy``, ``long_range_accuracy``. ``resets=True`` (external reset) zeroes
    the state at every string start instead, and only there."""
    if not getattr(model, "stateful", False):
        raise ValueError("model must carry its state across calls: NextSymbolModel(..., stateful=True)")
    if symbols < window or symbols % window:
        raise ValueError(f"symbols must be a positive multiple of window={window}, got {symbols}")
    data = stream_data(streams=1, windows=symbols // window, window=window, grammar=grammar, seed=seed,
                       resets=resets)
    logits = predict(model, data, device=device).reshape(symbols, -1).cpu()
    starts = ContinualReber(get_grammar(grammar)).start_mask("".join(data.strings))
    return stream_report(logits, data.targets.reshape(symbols, -1), data.long_range.reshape(-1),
                         torch.from_numpy(starts))


def stream_task(train_windows: int = 320, test_windows: int = 80, streams: int = 16, window: int = 50,
                seed: int = 0, grammar: str | Grammar = EMBEDDED_REBER, resets: bool = False) -> tuple[Any, Any]:
    """Train and test data of the stream protocol from independent seeds: ``streams``
    parallel streams sharing ``train_windows`` windows of ``window`` symbols for training,
    a quarter as many streams (at least one) sharing ``test_windows`` for the per-epoch
    test score; every stream gets at least one window. ``resets=True``: both flag every
    string start for an external reset (``reber.tasks.stream_data``)."""
    test_streams = max(1, streams // 4)
    train_seed, test_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2))
    return (stream_data(streams, max(1, train_windows // streams), window, grammar, train_seed, resets),
            stream_data(test_streams, max(1, test_windows // test_streams), window, grammar, test_seed, resets))
