"""Which engine computes a model, chosen in one place by one pure function.

| model | where | engine |
|---|---|---|
| ``MaskedRNN/LSTM/GRU`` (one model) | any device | ``"torch"``: torch's fused kernel, masks applied in place |
| ``LayeredRNN`` | CPU, float32, no autocast | ``"compiled"``: ``rnn_models.native``, one call each way |
| ``LayeredRNN`` | anything else | ``"torch"``: torch's kernels, one fused call per DAG layer |
| K stackable masked models | CPU: K >= 16, H <= 64, batch <= 32; CUDA: K >= 8, H <= 256 | ``"batched"``: ``rnn_models.ensemble`` |
| K models otherwise | any | ``"separate"``: the training loop once per model |

Each row stays only while a benchmark in docs/benchmarks.md shows its engine winning where
a user goes; the thresholds below are those measurements (docs/bench/ensemble.md,
docs/bench/layered.md). Every caller takes an explicit override (``engine=``) so
benchmarks compare engines without flipping any global.
"""

from __future__ import annotations

import torch

MODELS = ("masked", "layered", "stack")
"""What ``choose_engine`` decides for: one masked module, one layered network, K models."""
CHOICES: dict[str, tuple[str, ...]] = {
    "masked": ("torch",),
    "layered": ("torch", "compiled"),
    "stack": ("separate", "batched"),
}
"""The engines each kind of model can run on (besides ``"auto"``)."""

STACK_MIN_MODELS = 16
STACK_MAX_HIDDEN = 64
STACK_MAX_BATCH = 32
CUDA_STACK_MIN_MODELS = 8
CUDA_STACK_MAX_HIDDEN = 256


def choose_engine(model: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *,
                  autocast: bool = False, num_models: int = 1, hidden_size: int = 0,
                  batch_size: int = 0) -> str:
    """The engine ``"auto"`` resolves to for ``model`` (a key of ``CHOICES``) on ``device``.

    ``"layered"``: the compiled network for float32 CPU input outside autocast (2.4-5.5x
    torch's kernels per training step), else torch's kernels. ``"stack"``: training K
    stackable models together (``rnn_models.ensemble``) pays where each model's own kernels
    are call-bound. On a CPU: many (>= ``STACK_MIN_MODELS``) small (H <=
    ``STACK_MAX_HIDDEN``) models on small batches (<= ``STACK_MAX_BATCH``), 1.3-2.6x. On
    CUDA, where every model's own kernels are launch-bound: from ``CUDA_STACK_MIN_MODELS``
    models of H <= ``CUDA_STACK_MAX_HIDDEN`` at any batch (H200: 1.7x at K = 8, 3-8x at
    K = 16-64; 1.04x at K = 4). Elsewhere (other devices: unmeasured) one model at a time.
    Pass ``num_models``, ``hidden_size`` and ``batch_size`` for it.
    """
    if model not in CHOICES:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    on_cpu = torch.device(device).type == "cpu"
    if model == "layered":
        return "compiled" if on_cpu and dtype == torch.float32 and not autocast else "torch"
    if model == "stack":
        if on_cpu:
            wins = (num_models >= STACK_MIN_MODELS and 0 < hidden_size <= STACK_MAX_HIDDEN
                    and 0 < batch_size <= STACK_MAX_BATCH)
        else:
            wins = (torch.device(device).type == "cuda" and num_models >= CUDA_STACK_MIN_MODELS
                    and 0 < hidden_size <= CUDA_STACK_MAX_HIDDEN)
        return "batched" if wins else "separate"
    return "torch"


def check_engine(model: str, engine: str) -> str:
    """``engine`` if ``model`` can run on it (or it is ``"auto"``), else a ValueError naming both."""
    allowed = ("auto",) + CHOICES[model]
    if engine not in allowed:
        raise ValueError(f"engine must be one of {allowed} for a {model} model, got {engine!r}")
    return engine
