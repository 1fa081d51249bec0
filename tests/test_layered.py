"""LayeredRNN: the study's DAG-layered architecture built from a LayeredStructure."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure
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


def expected_parameters(structure: LayeredStructure, input_size: int, gates: int) -> int:
    """Weights and both biases of one recurrent layer per DAG layer and per skip connection."""
    w = structure.widths

    def layer(inputs, width):
        return gates * width * (inputs + width) + 2 * gates * width

    main = sum(layer(input_size if k == 0 else w[k - 1], w[k]) for k in range(len(w)))
    return main + sum(layer(w[c.source], w[c.target]) for c in structure.skip_connections)


@settings(max_examples=15, deadline=None)
@given(structure=structures(), cell=st.sampled_from(sorted(GATES)), input_size=st.integers(1, 5))
def test_parameter_count_and_gate_placement(structure, cell, input_size):
    model = LayeredRNN(structure, input_size, cell=cell)
    gates = GATES[cell]
    expected = expected_parameters(structure, input_size, gates)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert len(model.layers) == structure.depth
    assert len(model.skips) == len(structure.skip_connections)
    for c in structure.connections:
        layer = model.layers[c.target] if not c.is_skip else model.skips[f"{c.source}_to_{c.target}"]
        width = structure.widths[c.target]
        for g in range(gates):  # every gate block carries the connection's mask
            block = layer.weight_ih_l0[g * width:(g + 1) * width]
            assert torch.all(block[~c.mask] == 0)
            assert torch.equal(layer.masks["weight_ih_l0"][g * width:(g + 1) * width], c.mask)
    assert "weight_ih_l0" not in model.layers[0].masks  # the input feeds layer 0 densely


@settings(max_examples=8, deadline=None)
@given(structure=structures(recurrent=True), cell=st.sampled_from(["lstm", "gru"]))
def test_recurrent_masks_cover_main_and_skip_layers(structure, cell):
    model = LayeredRNN(structure, 2, cell=cell)
    gates = GATES[cell]
    for k, layer in enumerate(model.layers):
        assert torch.equal(layer.masks["weight_hh_l0"], structure.recurrent_masks[k].repeat(gates, 1))
    for c in structure.skip_connections:
        skip = model.skips[f"{c.source}_to_{c.target}"]
        tiled = structure.recurrent_masks[c.target].repeat(gates, 1)
        assert torch.equal(skip.masks["weight_hh_l0"], tiled)


def test_recurrent_weights_are_dense_without_recurrent_masks():
    structure = LayeredStructure((2, 3), (LayerConnection(0, 1, torch.ones(3, 2, dtype=torch.bool)),))
    model = LayeredRNN(structure, 4, cell="lstm")
    assert all("weight_hh_l0" not in layer.masks for layer in model.layers)


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
    model = LayeredRNN(skip_structure(), 5, cell=cell, batch_first=True)
    x = torch.randn(2, 6, 5)
    out, states = model(x)
    first = model.layers[0](x)[0]
    expected = model.layers[2](model.layers[1](first)[0])[0] + model.skips["0_to_2"](first)[0]
    torch.testing.assert_close(out, expected)
    assert out.shape == (2, 6, model.output_size) == (2, 6, 4)
    assert len(states) == 3


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
