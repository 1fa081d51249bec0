"""The engine choice: one pure function, every device/dtype/model case, and its callers."""

from __future__ import annotations

import pytest
import torch

from rnn_models.engines import (
    CHOICES,
    CUDA_STACK_MAX_HIDDEN,
    CUDA_STACK_MIN_MODELS,
    STACK_MAX_BATCH,
    STACK_MAX_HIDDEN,
    STACK_MIN_MODELS,
    check_engine,
    choose_engine,
)
from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure
from rnn_models.masked import GATES

CELLS = sorted(GATES)
DEVICES = ["cpu", "cuda", "cuda:1", "mps"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("autocast", [False, True])
def test_layered_networks_compile_only_float32_cpu_input_outside_autocast(device, dtype, autocast):
    expected = "compiled" if (device, dtype, autocast) == ("cpu", torch.float32, False) else "torch"
    assert choose_engine("layered", device, dtype, autocast=autocast) == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_masked_module_always_keeps_torchs_kernels(device, dtype):
    assert choose_engine("masked", device, dtype) == "torch"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("models, hidden, batch", [
    (STACK_MIN_MODELS, STACK_MAX_HIDDEN, STACK_MAX_BATCH),
    (32, 16, 16),
    (STACK_MIN_MODELS - 1, 32, 16),
    (32, STACK_MAX_HIDDEN + 1, 16),
    (32, 32, STACK_MAX_BATCH + 1),
    (32, 0, 16),
    (1, 32, 16),
    (CUDA_STACK_MIN_MODELS, CUDA_STACK_MAX_HIDDEN, 128),
    (CUDA_STACK_MIN_MODELS - 1, 32, 128),
    (32, CUDA_STACK_MAX_HIDDEN + 1, 16),
])
def test_stacks_train_together_only_where_measured_faster(device, models, hidden, batch):
    on_cpu = (device == "cpu" and models >= STACK_MIN_MODELS and 0 < hidden <= STACK_MAX_HIDDEN
              and 0 < batch <= STACK_MAX_BATCH)
    on_cuda = device.startswith("cuda") and models >= CUDA_STACK_MIN_MODELS and 0 < hidden <= CUDA_STACK_MAX_HIDDEN
    wins = on_cpu or on_cuda
    found = choose_engine("stack", device, num_models=models, hidden_size=hidden, batch_size=batch)
    assert found == ("batched" if wins else "separate")


def test_choices_and_errors_name_what_is_allowed():
    assert CHOICES == {"masked": ("torch",), "layered": ("torch", "compiled"), "stack": ("separate", "batched")}
    with pytest.raises(ValueError, match=r"model must be one of \('masked', 'layered', 'stack'\), got 'mlp'"):
        choose_engine("mlp")
    assert check_engine("layered", "compiled") == "compiled"
    with pytest.raises(ValueError, match=r"engine must be one of \('auto', 'separate', 'batched'\) for a stack"):
        check_engine("stack", "compiled")


@pytest.mark.parametrize("cell", CELLS)
def test_layered_rnn_asks_the_one_function_for_each_input(cell):
    structure = LayeredStructure((2, 3), (LayerConnection(0, 1, torch.ones(3, 2, dtype=torch.bool)),))
    model = LayeredRNN(structure, 2, cell=cell, batch_first=True)
    x = torch.randn(2, 4, 2)
    assert model.engine_for(x) == "compiled"
    assert model.engine_for(x.double()) == "torch"
    assert model.engine_for(x[0]) == "torch"  # unbatched
    model.engine = "torch"
    assert model.engine_for(x) == "torch"


@pytest.mark.parametrize("cell", CELLS)
def test_fit_stacks_many_small_models_of_every_cell_on_a_cpu(cell, monkeypatch):
    """``fit`` resolves "auto" through ``stackable`` and ``choose_engine``: 16 small models
    of one cell on batches of 16 train as one stack, 2 of them one by one."""
    import rnn_models.ensemble as ensemble
    from rnn_models.masked import make_rnn
    from rnn_models.train import SequenceClassifier, TrainConfig, fit

    built = []
    real = ensemble.EnsembleModel

    def spy(models):
        built.append(len(models))
        return real(models)

    monkeypatch.setattr(ensemble, "EnsembleModel", spy)
    g = torch.Generator().manual_seed(0)
    data = type("Data", (), {"task": "classify", "inputs": torch.randn(16, 3, 2, generator=g),
                             "lengths": torch.full((16,), 3), "targets": (torch.rand(16, generator=g) < 0.5).float()})
    config = TrainConfig(epochs=1, batch_size=16)
    for count in (16, 2):
        models = [SequenceClassifier(make_rnn(cell, 2, 4, batch_first=True)) for _ in range(count)]
        assert len(fit(models, data, data, config)) == count
    assert built == [16]
