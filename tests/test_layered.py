"""LayeredRNN: the study's DAG-layered architecture built from a LayeredStructure."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure, PerConnectionLayeredRNN
from rnn_models.masked import GATES
from rnn_models.train import SequenceClassifier


@st.composite
def structures(draw, recurrent: bool | None = None) -> LayeredStructure:
    """Random layered structures: 1-4 layers, random masks, random skip connections."""
    widths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    seed = draw(st.integers(0, 10_000))
    gen = torch.Generator().manual_seed(seed)

    def mask(rows, cols):
        return torch.rand(rows, cols, generator=gen) < 0.5

    pairs = [(s, t) for t in range(1, len(widths)) for s in range(t)]
    chosen = [(s, t) for s, t in pairs if t == s + 1 or draw(st.booleans())]
    connections = [LayerConnection(s, t, mask(widths[t], widths[s])) for s, t in chosen]
    with_recurrent = draw(st.booleans()) if recurrent is None else recurrent
    recurrent_masks = [mask(w, w) for w in widths] if with_recurrent else None
    return LayeredStructure(widths, connections, recurrent_masks)


def reference_and_fused(structure: LayeredStructure, cell: str, input_size: int):
    """The per-connection reference and the fused LayeredRNN on the same weights."""
    reference = PerConnectionLayeredRNN(structure, input_size, cell)
    fused = LayeredRNN(structure, input_size, cell=cell, batch_first=True)
    reference.copy_into(fused)
    return reference, fused


@settings(max_examples=15, deadline=None)
@given(structure=structures(), cell=st.sampled_from(sorted(GATES)), input_size=st.integers(1, 5))
def test_fused_layers_equal_per_connection_layers(structure, cell, input_size):
    """Outputs, every block's gradients and the parameter count equal the study's layout."""
    torch.manual_seed(0)
    reference, fused = reference_and_fused(structure, cell, input_size)
    assert fused.parameter_count() == sum(p.numel() for p in reference.parameters())
    assert len(fused.layers) == structure.depth
    x = torch.randn(3, 5, input_size)
    expected, got = reference(x)[0], fused(x)[0]
    torch.testing.assert_close(got, expected)
    expected.pow(2).sum().backward()
    got.pow(2).sum().backward()
    for j, layer in enumerate(fused.layers):
        for b, source in enumerate(fused.block_sources(j)):
            own = reference.block_module(j, source)
            for name, index in fused.block_slices(j, b).items():
                torch.testing.assert_close(getattr(layer, name).grad[index], getattr(own, name).grad)


@settings(max_examples=10, deadline=None)
@given(structure=structures(), cell=st.sampled_from(sorted(GATES)))
def test_blocks_see_only_their_source_and_own_units(structure, cell):
    """Block masks: each block reads its own source through the connection's mask tiled
    over the gates, recurs only within itself; everything off the blocks is zero."""
    model = LayeredRNN(structure, 3, cell=cell)
    gates = GATES[cell]
    for j, layer in enumerate(model.layers):
        width = structure.widths[j]
        on_block = {name: torch.zeros_like(getattr(layer, name), dtype=torch.bool)
                    for name in ("weight_ih_l0", "weight_hh_l0")}
        for b, source in enumerate(model.block_sources(j)):
            where = model.block_slices(j, b)
            for name in on_block:
                on_block[name][where[name]] = True
            masks = layer.masks
            if j > 0 and "weight_ih_l0" in masks:
                connection = model.connections[j][b]
                assert connection.source == source
                assert torch.equal(masks["weight_ih_l0"][where["weight_ih_l0"]], connection.mask.repeat(gates, 1))
            recurrent = structure.recurrent_masks
            if recurrent is not None and "weight_hh_l0" in masks:
                assert torch.equal(masks["weight_hh_l0"][where["weight_hh_l0"]], recurrent[j].repeat(gates, 1))
            bound = 1 / width ** 0.5  # initialised like a torch layer of `width` units
            assert all(getattr(layer, n)[i].abs().max() <= bound for n, i in where.items())
        for name, inside in on_block.items():
            assert torch.all(getattr(layer, name)[~inside] == 0)
    assert "weight_ih_l0" not in model.layers[0].masks  # the input feeds layer 0 densely


def test_blocks_stay_apart_during_training():
    """Off-block weights stay zero through Adam steps, with no flat-weight warning."""
    structure = skip_structure()
    model = LayeredRNN(structure, 5, cell="lstm", batch_first=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(4, 6, 5))[0].pow(2).sum().backward()
            optimizer.step()
    layer = model.layers[2]
    for name in ("weight_ih_l0", "weight_hh_l0"):
        weight = getattr(layer, name)
        assert torch.all(weight[~layer.masks[name]] == 0)
        assert weight.shape == (4 * 2 * 4, {"weight_ih_l0": 2 + 3, "weight_hh_l0": 2 * 4}[name])


def test_recurrent_weights_are_dense_without_recurrent_masks_or_skips():
    structure = LayeredStructure((2, 3), (LayerConnection(0, 1, torch.ones(3, 2, dtype=torch.bool)),))
    model = LayeredRNN(structure, 4, cell="lstm")
    assert all(layer.masks == {} for layer in model.layers)


def skip_structure() -> LayeredStructure:
    """0 -> 1 -> 2 main path plus a skip 0 -> 2."""
    gen = torch.Generator().manual_seed(0)
    widths = (3, 2, 4)
    connections = [
        LayerConnection(0, 1, torch.rand(2, 3, generator=gen) < 0.6),
        LayerConnection(1, 2, torch.rand(4, 2, generator=gen) < 0.6),
        LayerConnection(0, 2, torch.rand(4, 3, generator=gen) < 0.6),
    ]
    return LayeredStructure(widths, connections)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm"])
def test_skip_output_adds_into_target_layer(cell):
    torch.manual_seed(0)
    reference, model = reference_and_fused(skip_structure(), cell, 5)
    x = torch.randn(2, 6, 5)
    out, states = model(x)
    first = reference.layers[0](x)[0]
    expected = reference.layers[2](reference.layers[1](first)[0])[0] + reference.skips["0_to_2"](first)[0]
    torch.testing.assert_close(out, expected)
    assert out.shape == (2, 6, model.output_size) == (2, 6, 4)
    assert len(states) == 3
    main_state = reference.layers[2](reference.layers[1](first)[0])[1]
    torch.testing.assert_close(states[2], main_state)  # the main block's final state


def test_packed_input_matches_padded_at_valid_steps():
    torch.manual_seed(1)
    model = LayeredRNN(skip_structure(), 5, cell="gru", batch_first=True)
    x, lengths = torch.randn(3, 6, 5), torch.tensor([6, 3, 1])
    padded, _ = model(x)
    packed, _ = model(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    unpacked, _ = pad_packed_sequence(packed, batch_first=True)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(unpacked[b, :n], padded[b, :n])


def test_classifier_head_reads_layered_output_at_true_last_step():
    torch.manual_seed(3)
    model = SequenceClassifier(LayeredRNN(skip_structure(), 5, cell="lstm", batch_first=True)).eval()
    x, lengths = torch.randn(3, 6, 5), torch.tensor([6, 3, 1])
    garbage = x.clone()
    garbage[1, 3:], garbage[2, 1:] = 9.0, -9.0
    with torch.no_grad():
        logits = model(x, lengths)
        torch.testing.assert_close(model(garbage, lengths), logits)
        torch.testing.assert_close(model(x[2:, :1], lengths[2:]), logits[2:])


def test_time_major_layout():
    torch.manual_seed(2)
    structure = skip_structure()
    batch_first = LayeredRNN(structure, 5, cell="lstm", batch_first=True)
    time_major = LayeredRNN(structure, 5, cell="lstm")
    time_major.load_state_dict(batch_first.state_dict())
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(time_major(x.transpose(0, 1))[0].transpose(0, 1), batch_first(x)[0])


def test_bad_arguments_raise():
    structure = skip_structure()
    with pytest.raises(ValueError, match="structure must be a LayeredStructure"):
        LayeredRNN({"widths": [1]}, 3)
    with pytest.raises(ValueError, match="input_size must be >= 1"):
        LayeredRNN(structure, 0)
    with pytest.raises(ValueError, match="cell must be one of"):
        LayeredRNN(structure, 3, cell="cnn")
    with pytest.raises(ValueError, match="block must be in 0..1 for layer 2"):
        LayeredRNN(structure, 3).block_slices(2, 2)


@settings(max_examples=12, deadline=None)
@given(structure=structures(), cell=st.sampled_from(sorted(GATES)), batch_first=st.booleans())
def test_compiled_layers_equal_torch_kernels(structure, cell, batch_first):
    """A float32 CPU input runs on rnn_models.native's compiled network; outputs, final
    states and every gradient (the input's too) equal those of torch's own kernels on the
    same weights."""
    torch.manual_seed(2)
    model = LayeredRNN(structure, 3, cell=cell, batch_first=batch_first)
    x = (torch.randn(4, 6, 3) if batch_first else torch.randn(6, 4, 3)).requires_grad_()
    results = []
    for engine in ("compiled", "torch"):
        model.engine = engine
        model.zero_grad()
        x.grad = None
        out, states = model(x)
        flat = [s for state in states for s in (state if isinstance(state, tuple) else (state,))]
        (out.square().sum() + sum(s.sum() for s in flat)).backward()
        results.append([out.detach(), x.grad.clone()] + [s.detach() for s in flat]
                       + [p.grad.clone() for p in model.parameters()])
    assert len(results[0]) == len(results[1])
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_a_loss_on_final_cell_states_alone_gets_torchs_gradients():
    """Only the LSTM's final cell states in the loss: the compiled backward gets no output
    or state gradient, only the cells'."""
    torch.manual_seed(8)
    model = LayeredRNN(skip_structure(), 3, cell="lstm", batch_first=True)
    x = torch.randn(4, 5, 3)
    grads = []
    for engine in ("compiled", "torch"):
        model.engine = engine
        model.zero_grad()
        _, states = model(x)
        sum(c.square().sum() for _, c in states).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_float64_input_runs_on_torch_kernels():
    structure = LayeredStructure((2, 3), (LayerConnection(0, 1, torch.ones(3, 2, dtype=torch.bool)),))
    model = LayeredRNN(structure, 2, cell="gru", batch_first=True).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64)
    assert model.engine_for(x) == "torch"
    out, _ = model(x)
    assert out.dtype == torch.float64 and out.shape == (2, 4, 3)
    model.engine = "compiled"
    with pytest.raises(ValueError, match="engine 'compiled' needs a batched float32 CPU tensor.*float64"):
        model(x)


def test_unbatched_and_autocast_inputs_run_on_torch_kernels():
    """Inputs the compiled layers do not take (unbatched, CPU autocast) keep torch's path."""
    structure = LayeredStructure((2, 3), (LayerConnection(0, 1, torch.ones(3, 2, dtype=torch.bool)),))
    model = LayeredRNN(structure, 2, cell="lstm", batch_first=True)
    x = torch.randn(4, 2)
    assert model(x)[0].shape == (4, 3)
    torch.testing.assert_close(model(x)[0], model(x.unsqueeze(0))[0][0])
    assert model.engine_for(x) == "torch" and model.engine_for(x.unsqueeze(0)) == "compiled"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.engine_for(x.unsqueeze(0)) == "torch"
        assert model(x.unsqueeze(0))[0].shape == (1, 4, 3)


def test_engine_argument_is_checked_and_torch_is_always_honoured():
    structure = LayeredStructure((2, 3), (LayerConnection(0, 1, torch.ones(3, 2, dtype=torch.bool)),))
    with pytest.raises(ValueError, match=r"engine must be one of \('auto', 'torch', 'compiled'\) for a layered"):
        LayeredRNN(structure, 2, engine="numba")
    model = LayeredRNN(structure, 2, batch_first=True, engine="torch")
    assert model.engine_for(torch.randn(2, 4, 2)) == "torch"
    packed = pack_padded_sequence(torch.randn(2, 4, 2), torch.tensor([4, 2]), batch_first=True)
    model.engine = "compiled"
    with pytest.raises(ValueError, match="PackedSequence"):
        model(packed)


def test_a_model_pickled_without_its_native_plan_gets_one():
    """Models saved before the compiled network existed have no ``_native_plan`` (nor
    ``engine``)."""
    model = LayeredRNN(skip_structure(), 3, cell="gru", batch_first=True)
    old = copy.copy(model)
    del old.__dict__["_native_plan"], old.__dict__["engine"]
    restored = pickle.loads(pickle.dumps(old))
    assert restored.engine == "auto"
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(restored(x)[0], model(x)[0])
