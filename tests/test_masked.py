"""MaskedRNN / MaskedLSTM / MaskedGRU: torch's contract, masks that stay, reports."""

from __future__ import annotations

import copy
import io
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnn_models.masked import GATES, MaskedGRU, MaskedLSTM, MaskedRNN, Remask, make_rnn

CELLS = sorted(GATES)
DENSE = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def dense_twin(cell: str, *args, **kwargs) -> nn.RNNBase:
    """The plain torch module of the same cell type and arguments."""
    if cell.startswith("rnn_"):
        kwargs["nonlinearity"] = cell[4:]
    return DENSE[cell](*args, **kwargs)


def random_mask(rows: int, cols: int, density: float, seed: int) -> torch.Tensor:
    return torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed)) < density


def hidden_mask_names(model: nn.RNNBase, kind: str = "hh") -> list[str]:
    return [n for n in model._flat_weights_names if n.startswith(f"weight_{kind}")]


@settings(max_examples=12, deadline=None)
@given(
    cell=st.sampled_from(CELLS),
    hidden=st.integers(1, 6),
    inputs=st.integers(1, 4),
    layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_output_equals_torch_module_with_masked_weights(cell, hidden, inputs, layers,
                                                        bidirectional, batch_first, density, seed):
    hh = random_mask(hidden, hidden, density, seed)
    ih = random_mask(hidden, inputs, density, seed + 1)
    args = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    torch.manual_seed(seed)
    masked = make_rnn(cell, inputs, hidden, hh_mask=hh, ih_mask=[ih] + [None] * (layers - 1), **args)
    torch.manual_seed(seed)
    dense = dense_twin(cell, inputs, hidden, **args)
    gates = GATES[cell]
    with torch.no_grad():  # independent reference: same init, masks tiled block by block here
        for name in hidden_mask_names(dense):
            getattr(dense, name).mul_(torch.cat([hh] * gates))
        dense.weight_ih_l0.mul_(torch.cat([ih] * gates))
        if bidirectional:
            dense.weight_ih_l0_reverse.mul_(torch.cat([ih] * gates))
    x = torch.randn(3, 5, inputs) if batch_first else torch.randn(5, 3, inputs)
    h0 = torch.randn(layers * (2 if bidirectional else 1), 3, hidden)
    initial = (h0, torch.randn_like(h0)) if cell == "lstm" else h0
    out_m, state_m = masked(x, initial)
    out_d, state_d = dense(x, initial)
    torch.testing.assert_close(out_m, out_d)
    for a, b in zip(state_m if cell == "lstm" else [state_m], state_d if cell == "lstm" else [state_d]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_square_mask_tiles_gate_blocks_and_full_mask_is_kept(cell):
    gates = GATES[cell]
    square = random_mask(5, 5, 0.4, 0)
    full = random_mask(gates * 5, 5, 0.4, 1)
    model = make_rnn(cell, 3, 5, num_layers=2, hh_mask=[square, full])
    for g in range(gates):
        block = model.weight_hh_l0[g * 5:(g + 1) * 5]
        assert torch.equal(block != 0, square)
        assert torch.equal(model.masks["weight_hh_l0"][g * 5:(g + 1) * 5], square)
    assert torch.equal(model.weight_hh_l1 != 0, full)


def test_classes_match_make_rnn_and_torch_bases():
    relu = make_rnn("rnn_relu", 2, 3)
    assert isinstance(relu, MaskedRNN) and relu.nonlinearity == "relu"
    assert isinstance(make_rnn("lstm", 2, 3), nn.LSTM) and isinstance(make_rnn("lstm", 2, 3), MaskedLSTM)
    assert isinstance(make_rnn("gru", 2, 3), MaskedGRU)
    assert MaskedLSTM(2, 3, 2, batch_first=True).num_layers == 2  # torch's positional arguments


def _train_steps(model, optimizer, steps, x, remask=None):
    for _ in range(steps):
        optimizer.zero_grad()
        out, _ = model(x)
        out.pow(2).mean().backward()
        optimizer.step()
        if remask is not None:
            remask()


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
    lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
], ids=["adam", "adamw", "sgd_momentum"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_masked_weights_stay_zero_over_optimizer_steps(cell, make_optimizer):
    torch.manual_seed(0)
    hh, ih = random_mask(6, 6, 0.3, 0), random_mask(6, 4, 0.5, 1)
    model = make_rnn(cell, 4, 6, num_layers=2, hh_mask=hh, ih_mask=[ih, None])
    before = {n: getattr(model, n).detach().clone() for n in model.masks}
    _train_steps(model, make_optimizer(model.parameters()), 50, torch.randn(8, 5, 4))
    for name, mask in model.masks.items():
        weight = getattr(model, name)
        assert torch.all(weight[~mask] == 0), name
        assert torch.all(weight.grad[~mask] == 0), name
        assert not torch.equal(weight[mask], before[name][mask]), f"{name} did not train"


def test_masked_gradients_are_zero_right_after_backward():
    model = make_rnn("lstm", 3, 4, hh_mask=random_mask(4, 4, 0.5, 2))
    model(torch.randn(2, 6, 3))[0].sum().backward()
    mask = model.masks["weight_hh_l0"]
    assert torch.all(model.weight_hh_l0.grad[~mask] == 0)
    assert torch.any(model.weight_hh_l0.grad[mask] != 0)


def test_state_dict_round_trip_restores_masks_and_weights():
    torch.manual_seed(1)
    source = make_rnn("gru", 3, 4, num_layers=2, hh_mask=random_mask(4, 4, 0.5, 3))
    target = make_rnn("gru", 3, 4, num_layers=2, hh_mask=random_mask(4, 4, 0.5, 4))
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(target(x)[0], source(x)[0])


def test_state_dict_masks_load_into_an_unmasked_module():
    source = make_rnn("lstm", 3, 4, num_layers=2, hh_mask=[None, random_mask(4, 4, 0.5, 13)])
    target = make_rnn("lstm", 3, 4, num_layers=2)
    target.load_state_dict(source.state_dict())
    assert list(target.masks) == ["weight_hh_l1"]
    assert torch.equal(target.masks["weight_hh_l1"], source.masks["weight_hh_l1"])


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.Adam(p, lr=0.05),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
], ids=["adam", "sgd_momentum"])
def test_mask_set_mid_training_holds_despite_optimizer_state(make_optimizer):
    torch.manual_seed(3)
    model = make_rnn("gru", 3, 5)
    optimizer = make_optimizer(model.parameters())
    x = torch.randn(4, 5, 3)
    _train_steps(model, optimizer, 3, x)  # momentum of every weight is now non-zero
    mask = random_mask(5, 5, 0.3, 14)
    model.set_mask("weight_hh_l0", mask)
    unguarded = copy.deepcopy(model)
    unguarded_optimizer = make_optimizer(unguarded.parameters())
    unguarded_optimizer.load_state_dict(optimizer.state_dict())
    _train_steps(model, optimizer, 5, x, remask=Remask(model))
    assert torch.equal(model.weight_hh_l0 != 0, mask.repeat(3, 1))
    _train_steps(unguarded, unguarded_optimizer, 5, x)  # without Remask the momentum revives them
    assert not torch.equal(unguarded.weight_hh_l0 != 0, mask.repeat(3, 1))


def test_loaded_nonzero_masked_weight_is_masked_again():
    model = make_rnn("lstm", 3, 4, hh_mask=random_mask(4, 4, 0.5, 5))
    state = model.state_dict()
    state["weight_hh_l0"] = torch.where(state["weight_hh_l0_mask"], 1.0, math.nan)  # diverged
    model.load_state_dict(state)
    assert torch.equal(model.weight_hh_l0 != 0, model.masks["weight_hh_l0"])
    assert not model.weight_hh_l0.isnan().any()


def test_dense_torch_state_dict_loads_and_keeps_masks():
    mask = random_mask(4, 4, 0.5, 6)
    model = make_rnn("rnn_tanh", 3, 4, hh_mask=mask)
    dense = nn.RNN(3, 4)
    model.load_state_dict(dense.state_dict())
    assert torch.equal(model.weight_hh_l0, dense.weight_hh_l0 * mask)
    assert torch.equal(model.weight_ih_l0, dense.weight_ih_l0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_packed_and_padded_inputs_agree(cell):
    torch.manual_seed(2)
    model = make_rnn(cell, 3, 5, num_layers=2, batch_first=True, hh_mask=random_mask(5, 5, 0.4, 7))
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(3, 6, 3)
    padded, _ = model(x)
    packed, state = model(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    unpacked, _ = pad_packed_sequence(packed, batch_first=True)
    last = state[0][-1] if cell == "lstm" else state[-1]
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(unpacked[b, :n], padded[b, :n])
        torch.testing.assert_close(last[b], padded[b, n - 1])


def test_no_warning_through_training_copy_and_device_moves():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = make_rnn("lstm", 3, 4, num_layers=2, bidirectional=True,
                         hh_mask=random_mask(4, 4, 0.5, 8))
        model = copy.deepcopy(model).double().float().to("cpu")
        _train_steps(model, torch.optim.Adam(model.parameters(), lr=0.1), 3, torch.randn(2, 4, 3))
        buffer = io.BytesIO()
        torch.save(model, buffer)


def test_copies_keep_masking_and_masks_are_buffers():
    model = make_rnn("gru", 3, 4, hh_mask=random_mask(4, 4, 0.5, 9))
    clone = copy.deepcopy(model).double()
    assert clone.masks["weight_hh_l0"].dtype == torch.bool
    assert "weight_hh_l0_mask" in dict(clone.named_buffers())
    optimizer = torch.optim.Adam(clone.parameters(), lr=0.1)
    x = torch.randn(2, 4, 3, dtype=torch.double)
    _train_steps(clone, optimizer, 3, x)
    clone.set_mask("weight_ih_l0", random_mask(4, 3, 0.5, 15))  # Adam moments are non-zero here
    _train_steps(clone, optimizer, 3, x, remask=Remask(clone))
    for name, mask in clone.masks.items():
        weight = getattr(clone, name)
        assert torch.all(weight[~mask] == 0) and torch.all(weight.grad[~mask] == 0), name


def test_optimizer_steps_leave_other_modules_untouched():
    model = make_rnn("rnn_tanh", 2, 3, hh_mask=random_mask(3, 3, 0.5, 10))
    with torch.no_grad():
        model.weight_hh_l0.fill_(1.0)  # by-hand edit; only apply_masks or its own optimizer re-masks
    other = nn.Linear(2, 1)
    torch.optim.SGD(other.parameters(), lr=0.1).step()
    assert torch.all(model.weight_hh_l0 == 1.0)
    model.apply_masks()
    assert torch.equal(model.weight_hh_l0 != 0, model.masks["weight_hh_l0"])


def test_in_place_mask_edit_takes_effect_at_the_next_step():
    model = make_rnn("lstm", 3, 4, hh_mask=torch.ones(4, 4, dtype=torch.bool))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 5, 3)
    remask = Remask(model)
    _train_steps(model, optimizer, 2, x, remask)  # the cached 0/1 copy of the mask exists now
    model.weight_hh_l0_mask[5, 1] = False
    _train_steps(model, optimizer, 1, x, remask)
    assert model.weight_hh_l0[5, 1] == 0 and model.weight_hh_l0.grad[5, 1] == 0
    assert int((model.weight_hh_l0 == 0).sum()) == 1


def test_reset_parameters_and_set_mask():
    model = make_rnn("lstm", 3, 4)
    assert model.masks == {}
    mask = random_mask(4, 4, 0.5, 11)
    model.set_mask("weight_hh_l0", mask)
    model.reset_parameters()
    assert torch.equal(model.weight_hh_l0 != 0, mask.repeat(4, 1))
    model.set_mask("weight_hh_l0", None)
    assert model.masks == {}


def test_density_and_nonzero_count():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, :2] = True  # 2 of 16 per gate
    full = torch.ones(12, 4, dtype=torch.bool)
    full[:4] = False  # reset gate fully pruned
    model = make_rnn("gru", 3, 4, num_layers=2, hh_mask=[mask, full])
    report = model.density()
    assert report["weight_hh_l0"] == {"total": 0.125, "r": 0.125, "z": 0.125, "n": 0.125}
    assert report["weight_hh_l1"] == pytest.approx({"total": 2 / 3, "r": 0.0, "z": 1.0, "n": 1.0})
    assert report["weight_ih_l0"]["total"] == 1.0
    total = sum(p.numel() for p in model.parameters())
    assert model.count_nonzero() == total - (12 * 4 - 6) - 16


@pytest.mark.parametrize("kwargs, match", [
    (dict(hh_mask=torch.ones(4, 4)), "bool"),
    (dict(hh_mask=torch.ones(3, 4, dtype=torch.bool)), r"shape \(4, 4\).*\(16, 4\)"),
    (dict(ih_mask=torch.ones(4, 4, dtype=torch.bool)), r"weight_ih_l0"),
    (dict(hh_mask=[None, None, None]), "num_layers"),
])
def test_bad_masks_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_rnn("lstm", 3, 4, num_layers=2, **kwargs)


def test_bad_cell_and_weight_name_raise():
    with pytest.raises(ValueError, match="cell must be one of"):
        make_rnn("transformer", 3, 4)
    with pytest.raises(ValueError, match="weight_name must be one of"):
        make_rnn("gru", 3, 4).set_mask("bias_hh_l0", torch.ones(4, 4, dtype=torch.bool))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_keeps_masks():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = make_rnn("lstm", 3, 8, num_layers=2, hh_mask=random_mask(8, 8, 0.3, 12)).cuda()
        assert model.masks["weight_hh_l0"].is_cuda
        _train_steps(model, torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1), 10,
                     torch.randn(4, 5, 3, device="cuda"))
    for name, mask in model.masks.items():
        assert torch.all(getattr(model, name)[~mask] == 0)


def test_remask_reads_weights_and_masks_live():
    """``Remask`` finds the mask holders once; a weight replaced or a mask registered later
    is still re-masked. Gradients set by hand bypass the gradient hooks, so only the
    re-masking keeps the weights zero here."""
    def step_with_dense_gradients(optimizer, module, remask):
        for parameter in module.parameters():
            parameter.grad = torch.ones_like(parameter)
        optimizer.step()
        remask()

    model = torch.nn.ModuleList([make_rnn("lstm", 3, 4, hh_mask=random_mask(4, 4, 0.5, 20)),
                                 make_rnn("gru", 3, 4, hh_mask=random_mask(4, 4, 0.5, 21)),
                                 make_rnn("lstm", 3, 4)])
    first, second, third = model
    remask = Remask(model)
    assert remask.holders == [first, second, third]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step_with_dense_gradients(optimizer, model, remask)
    for module in (first, second):
        assert torch.equal(module.weight_hh_l0 != 0, module.masks["weight_hh_l0"])
    second.weight_hh_l0 = torch.nn.Parameter(torch.ones_like(second.weight_hh_l0))
    third.register_buffer("weight_hh_l0_mask", random_mask(4, 4, 0.5, 23).repeat(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step_with_dense_gradients(optimizer, model, remask)
    for module in (second, third):
        assert torch.equal(module.weight_hh_l0 != 0, module.masks["weight_hh_l0"])


def test_fit_re_masks_after_every_step_with_optimizer_state():
    """Inside ``fit`` the ``Remask`` hook runs after each step: a mask set by a hook in the
    middle of training (with Adam's moments non-zero) holds from the next step on."""
    from rnn_models.train import Hook, SequenceClassifier, TrainConfig, fit

    class PruneAtStep(Hook):
        def __init__(self):
            self.mask, self.checked = random_mask(6, 6, 0.3, 30), 0

        def after_step(self, state):
            rnn = state.model.rnn
            if state.step == 3:
                rnn.set_mask("weight_hh_l0", self.mask)
            if state.step > 3:
                assert torch.equal(rnn.weight_hh_l0 != 0, self.mask.repeat(4, 1))
                self.checked += 1

    g = torch.Generator().manual_seed(0)
    data = SimpleNamespace(task="classify", inputs=torch.randn(32, 5, 3, generator=g),
                           lengths=torch.full((32,), 5), targets=(torch.rand(32, generator=g) < 0.5).float())
    hook = PruneAtStep()
    fit(SequenceClassifier(make_rnn("lstm", 3, 6, batch_first=True)), data, data,
        TrainConfig(epochs=2, batch_size=8, lr=0.05), hooks=[hook])
    assert hook.checked == 5
