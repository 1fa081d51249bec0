"""Magnitude pruning, lottery-ticket controls and robustness curves (rnn_models.pruning),
and the masked MLP (rnn_models.mlp)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_models.config import TrainConfig
from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure
from rnn_models.masked import make_rnn
from rnn_models.mlp import FixedInputs, MaskedLinear, MaskedMLP, mask_readout
from rnn_models.pruning import (KeepWeights, StopOnPlateau, accuracy, iterative_pruning, model_masks, per_round,
                                prune, random_masks, reinit, rewind, robustness_curve, snapshot, weight_classes)
from rnn_models.train import SequenceClassifier, fit


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (tests/conftest.py)


def gru_with_prior(seed: int = 0) -> SequenceClassifier:
    """A GRU classifier whose hidden-to-hidden weights carry a 30 % dense prior mask."""
    torch.manual_seed(seed)
    prior = torch.rand(6, 6, generator=torch.Generator().manual_seed(seed)) < 0.3
    return SequenceClassifier(make_rnn("gru", 3, 6, batch_first=True, hh_mask=prior))


def layered(cell: str = "lstm") -> LayeredRNN:
    """Widths 3-2-2 with a main path and a skip 0 -> 2, sparse connection masks."""
    torch.manual_seed(1)
    conns = (LayerConnection(0, 1, torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)),
             LayerConnection(1, 2, torch.tensor([[1, 1], [0, 1]], dtype=torch.bool)),
             LayerConnection(0, 2, torch.tensor([[1, 0, 0], [0, 0, 1]], dtype=torch.bool)))
    return LayeredRNN(LayeredStructure((3, 2, 2), conns), input_size=4, cell=cell, batch_first=True)


def toy(n: int, seed: int) -> FixedInputs:
    """Two separable classes of 4 features: the sign of feature 0 decides."""
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    return FixedInputs.from_arrays(x, (x[:, 0] > 0).long(), 2)


# ---------------------------------------------------------------------------------------
# classes
# ---------------------------------------------------------------------------------------


def test_classes_of_a_masked_lstm_by_matrix_and_by_gate():
    model = SequenceClassifier(make_rnn("lstm", 3, 4, batch_first=True))
    assert [c.name for c in weight_classes(model)] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0"]
    assert [c.name for c in weight_classes(model, "hh", per_gate=True)] == \
        [f"rnn.weight_hh_l0[{g}]" for g in "ifgo"]
    gates = weight_classes(model, "ih", per_gate=True)
    assert all(int(c.region.sum()) == 4 * 3 for c in gates)
    assert bool(gates[1].region[4:8].all()) and not bool(gates[1].region[:4].any())


def test_readout_needs_a_mask_and_mask_readout_keeps_its_weights():
    model = SequenceClassifier(make_rnn("rnn_tanh", 3, 4, batch_first=True))
    with pytest.raises(ValueError, match="mask_readout"):
        weight_classes(model, readout=True)
    before = model.readout.weight.detach().clone()
    mask_readout(model)
    assert isinstance(model.readout, MaskedLinear) and torch.equal(model.readout.weight, before)
    assert [c.name for c in weight_classes(model, "hh", readout=True)] == ["rnn.weight_hh_l0", "readout.weight"]


def test_bad_arguments_are_named():
    model = gru_with_prior()
    with pytest.raises(ValueError, match="weights must be one of"):
        weight_classes(model, "all")
    with pytest.raises(ValueError, match="scheme must be one of"):
        prune(model, "global", 0.5)
    with pytest.raises(ValueError, match="amount must be"):
        prune(model, "blinded", 1.5)
    with pytest.raises(ValueError, match="unmasked LSTM"):
        weight_classes(SequenceClassifier(torch.nn.LSTM(3, 4, batch_first=True)))


def test_layered_classes_are_the_blocks_real_entries():
    net = layered()
    classes = weight_classes(net)
    assert [c.name for c in classes] == [
        "layers.0.weight_ih_l0[block 0]", "layers.0.weight_hh_l0[block 0]",
        "layers.1.weight_ih_l0[block 0]", "layers.1.weight_hh_l0[block 0]",
        "layers.2.weight_ih_l0[block 0]", "layers.2.weight_hh_l0[block 0]",
        "layers.2.weight_ih_l0[block 1]", "layers.2.weight_hh_l0[block 1]"]
    # 4 gates x (in x width + width x width) per block: 4 x (4*3 + 3*3 + 3*2 + 2*2 + 2*2 + 2*2 + 3*2 + 2*2)
    assert sum(int(c.region.sum()) for c in classes) == 196 == net.parameter_count() - 2 * 4 * (3 + 2 + 2 + 2)
    # alive: what the connection masks keep (4, 3 and 2 entries per gate), hidden-to-hidden dense
    assert sum(len(c.alive()) for c in classes) == 4 * (4 * 3 + 3 * 3 + 4 + 2 * 2 + 3 + 2 * 2 + 2 + 2 * 2)


# ---------------------------------------------------------------------------------------
# pruning
# ---------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(scheme=st.sampled_from(["blinded", "uniform", "distributed", "random"]),
       amount=st.floats(0.0, 1.0), per_gate=st.booleans(), seed=st.integers(0, 3))
def test_each_scheme_prunes_exactly_the_requested_fraction_inside_the_prior(scheme, amount, per_gate, seed):
    model = gru_with_prior(seed)
    before = model_masks(model)
    classes = weight_classes(model, per_gate=per_gate)
    alive = {c.name: len(c.alive()) for c in classes}
    result = prune(model, scheme, amount, per_gate=per_gate, seed=seed)
    after = model_masks(model)
    for key in before:  # never revived: the new mask lies inside the old one (and the prior)
        assert not bool((after[key] & ~before[key]).any())
    if scheme == "uniform":
        assert result.pruned == {name: int(amount * n + 0.5) for name, n in alive.items()}
    else:
        assert sum(result.pruned.values()) == int(amount * sum(alive.values()) + 0.5)
    assert {n: result.pruned[n] + result.remaining[n] for n in alive} == alive
    for c in classes:  # remaining counts are what the masks keep; pruned weights are zero
        assert len(c.alive()) == result.remaining[c.name]
        assert bool((c.values[~c.mask()] == 0).all())


def test_blinded_prunes_below_one_threshold_uniform_per_class():
    model = gru_with_prior()
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    before = model_masks(model)
    result = prune(model, "blinded", 0.6)
    pruned, kept = [], []
    for key, mask in model_masks(model).items():
        pruned.append(weights[key][before[key] & ~mask].abs())
        kept.append(weights[key][mask].abs())
    assert float(torch.cat(pruned).max()) == result.threshold <= float(torch.cat(kept).min())

    model = gru_with_prior()
    result = prune(model, "uniform", 0.6)
    assert result.threshold is None
    for key, mask in model_masks(model).items():
        gone = weights[key][before[key] & ~mask].abs()
        assert float(gone.max()) <= float(weights[key][mask].abs().min())


def test_distributed_prunes_below_lambda_sigma_of_each_class():
    model = gru_with_prior()
    classes = weight_classes(model)
    sigma = {c.key: float(c.values.detach().flatten()[c.alive()].std(unbiased=False)) for c in classes}
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    before = model_masks(model)
    result = prune(model, "distributed", 0.5)
    lam = result.threshold
    for key, mask in model_masks(model).items():
        gone, kept = weights[key][before[key] & ~mask].abs(), weights[key][mask].abs()
        assert bool((gone <= lam * sigma[key] * (1 + 1e-6)).all()) and bool((kept >= lam * sigma[key] * (1 - 1e-6)).all())


def test_hh_only_leaves_the_input_weights_and_counts_only_the_prior():
    model = gru_with_prior()
    prior = model.rnn.masks["weight_hh_l0"].clone()
    n = int(prior.sum())
    result = prune(model, "blinded", 0.5, weights="hh")
    assert result.pruned == {"rnn.weight_hh_l0": int(0.5 * n + 0.5)}
    assert "weight_ih_l0" not in model.rnn.masks
    assert int(model.rnn.masks["weight_hh_l0"].sum()) == n - int(0.5 * n + 0.5)


def test_layered_pruning_counts_only_block_entries_and_keeps_the_structure():
    net = layered()
    before = model_masks(net)
    n = sum(len(c.alive()) for c in weight_classes(net))
    result = prune(net, "uniform", 0.5, per_gate=True)
    assert sum(result.pruned.values()) + sum(result.remaining.values()) == n
    for key, mask in model_masks(net).items():
        assert not bool((mask & ~before[key]).any())  # off-block zeros stay off
    x = torch.randn(2, 5, 4)
    out_compiled = net(x)[0]
    net.engine = "torch"
    assert torch.allclose(out_compiled, net(x)[0], atol=1e-5)


def test_iterative_pruning_prunes_a_fraction_of_the_remainder_each_round():
    model = gru_with_prior()
    n = sum(len(c.alive()) for c in weight_classes(model))
    data = _sequences(32, 0)
    rounds = iterative_pruning(model, data, data, TrainConfig(epochs=1, batch_size=16), "blinded",
                               per_round(0.75, 2), rounds=2)
    assert per_round(0.75, 2) == pytest.approx(0.5)
    left = n
    for r in rounds:
        left -= int(0.5 * left + 0.5)
        assert sum(r.pruning.remaining.values()) == left and r.remaining == pytest.approx(left / n)
    assert [r.round for r in rounds] == [1, 2] and all(r.history.status == "done" for r in rounds)


def _sequences(n: int, seed: int):
    """Classify random sequences by the sign of their first input's first feature."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 5, 3, generator=g)

    class Data:
        task = "classify"

    data = Data()
    data.inputs, data.lengths = inputs, torch.full((n,), 5)
    data.targets = (inputs[:, 0, 0] > 0).float()
    return data


@pytest.mark.parametrize("optimizer, weight_decay", [("adam", 0.1), ("adamw", 0.1), ("sgd", 0.01), ("rmsprop", 0.01)])
def test_pruned_weights_stay_zero_through_retraining(optimizer, weight_decay):
    model = mask_readout(gru_with_prior())
    data = _sequences(64, 1)
    config = TrainConfig(optimizer=optimizer, lr=0.05, weight_decay=weight_decay, momentum=0.9 if optimizer == "sgd"
                         else 0.0, epochs=2, batch_size=16)
    fit(model, data, data, config)  # trained dense first: the weights to prune are not at init
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not contiguous / flatten_parameters" warning
        iterative_pruning(model, data, data, config, "blinded", 0.5, rounds=2, readout=True)
    for c in weight_classes(model, readout=True):
        assert int((c.values[~c.mask()] != 0).sum()) == 0


class PruneAtEpoch:
    """Prune in the middle of a run, while Adam has momentum for every weight."""

    def on_epoch_end(self, state):
        if state.epoch == 1:
            prune(state.model, "blinded", 0.7)


def test_a_mask_set_mid_training_holds_against_adam_momentum_and_weight_decay():
    model = gru_with_prior()
    data = _sequences(64, 2)
    fit(model, data, data, TrainConfig(lr=0.05, weight_decay=0.1, epochs=3, batch_size=16), hooks=[PruneAtEpoch()])
    for c in weight_classes(model):
        assert int((c.values[~c.mask()] != 0).sum()) == 0


def test_stop_on_plateau_ends_retraining_when_the_gain_is_small():
    model = gru_with_prior()
    data = _sequences(32, 3)
    history = fit(model, data, data, TrainConfig(epochs=6, batch_size=16), hooks=[StopOnPlateau(2.0)])
    assert len(history.epochs) == 2 and "rose by less than 2.0 in epoch 2" in history.reason
    rounds = iterative_pruning(model, data, data, TrainConfig(epochs=6, batch_size=16), "random", 0.2, min_gain=2.0)
    assert len(rounds[0].history.epochs) == 2
    # a gain threshold every epoch meets (accuracy never falls by more than 2) keeps training
    history = fit(gru_with_prior(), data, data, TrainConfig(epochs=4, batch_size=16), hooks=[StopOnPlateau(-2.0)])
    assert len(history.epochs) == 4 and history.reason == ""


def test_stop_on_plateau_stops_exactly_where_the_gain_falls_below_the_threshold():
    """Scores fed by hand: gains 0.3, 0.2, 0.05: with min_gain 0.1 it stops after epoch 4."""
    from types import SimpleNamespace

    hook = StopOnPlateau(0.1)
    stops = []
    state = SimpleNamespace(active=[True], stop=lambda reason, model=None: stops.append((state.epoch, reason)))
    hook.on_train_begin(state)
    for epoch, accuracy in enumerate([0.2, 0.5, 0.7, 0.75], start=1):
        state.epoch, state.scores = epoch, [{"test_acc": accuracy}]
        hook.on_epoch_end(state)
    assert [epoch for epoch, _ in stops] == [4]


# ---------------------------------------------------------------------------------------
# lottery tickets and structure alone
# ---------------------------------------------------------------------------------------


def test_keep_weights_rewind_and_reinit_give_the_stated_weights():
    model = gru_with_prior()
    data = _sequences(32, 4)
    initial = snapshot(model)
    keep = KeepWeights(epochs=(0, 1))
    fit(model, data, data, TrainConfig(lr=0.05, epochs=2, batch_size=16), hooks=[keep])
    assert sorted(keep.weights) == [0, 1]
    assert all(torch.equal(keep.weights[0][k], v) for k, v in initial.items())
    assert not torch.equal(keep.weights[1]["rnn.weight_ih_l0"], initial["rnn.weight_ih_l0"])
    prune(model, "blinded", 0.5)
    masks = model_masks(model)

    rewind(model, keep.weights[1])
    for name, p in model.named_parameters():
        mask = masks.get(name)
        expected = keep.weights[1][name] if mask is None else keep.weights[1][name] * mask
        assert torch.equal(p.detach(), expected)
    assert all(torch.equal(masks[k], v) for k, v in model_masks(model).items())

    fresh = gru_with_prior(seed=7)
    reinit(model, fresh)
    for name, p in model.named_parameters():
        mask = masks.get(name)
        value = fresh.get_parameter(name).detach()
        assert torch.equal(p.detach(), value if mask is None else value * mask)
    assert all(torch.equal(masks[k], v) for k, v in model_masks(model).items())


def test_rewind_refuses_weights_of_another_architecture():
    with pytest.raises(ValueError, match="rnn.weight_ih_l0"):
        rewind(gru_with_prior(), snapshot(SequenceClassifier(make_rnn("gru", 2, 6, batch_first=True))))


def test_keep_weights_refuses_a_stack():
    models = [SequenceClassifier(make_rnn("gru", 3, 4, batch_first=True)) for _ in range(2)]
    with pytest.raises(ValueError, match="KeepWeights needs one model"):
        fit(models, _sequences(8, 0), _sequences(8, 0), TrainConfig(epochs=1), hooks=[KeepWeights()],
            engine="batched")


@pytest.mark.parametrize("build", [gru_with_prior, layered])
def test_random_masks_keep_each_class_density_inside_the_support(build):
    model = build()
    support = model_masks(model)
    prune(model, "blinded", 0.6, per_gate=True)
    kept = {c.name: len(c.alive()) for c in weight_classes(model, per_gate=True)}
    pruned = model_masks(model)
    random_masks(model, support, seed=3, per_gate=True)
    assert {c.name: len(c.alive()) for c in weight_classes(model, per_gate=True)} == kept
    after = model_masks(model)
    assert all(not bool((after[k] & ~support[k]).any()) for k in support)
    assert any(not torch.equal(after[k], pruned[k]) for k in support)
    for c in weight_classes(model):
        assert int((c.values[~c.mask()] != 0).sum()) == 0


# ---------------------------------------------------------------------------------------
# robustness
# ---------------------------------------------------------------------------------------


def test_robustness_curve_is_monotone_on_an_example_built_for_it():
    """Example j is x = e_j of class 0; the readout's row 0 holds w_j = j + 1, row 1 is
    masked out by a prior. Example j is right while w_j > 0 (its logit beats the other
    class's 0), and pruning removes the smallest w_j first: accuracy = 1 - pruned fraction."""
    d = 10
    model = MaskedMLP((d, 2))
    prior = torch.zeros(2, d, dtype=torch.bool)
    prior[0] = True
    with torch.no_grad():
        model.readout.weight[0] = torch.arange(1.0, d + 1)
        model.readout.bias.zero_()
    model.readout.set_mask("weight", prior)
    data = FixedInputs.from_arrays(torch.eye(d), torch.zeros(d, dtype=torch.long), 2)
    before = snapshot(model)
    fractions = (0.0, 0.2, 0.5, 0.8, 1.0)
    curve = robustness_curve(model, data, fractions, readout=True)
    assert curve.accuracy[0] == accuracy(model, data) == 1.0
    assert curve.accuracy == pytest.approx(tuple(1 - f for f in fractions))
    assert all(b <= a for a, b in zip(curve.accuracy, curve.accuracy[1:]))
    assert curve.auc == pytest.approx(0.5)
    assert all(torch.equal(v, before[k]) for k, v in snapshot(model).items())  # left as it was


def test_robustness_curve_of_a_trained_model_starts_at_its_accuracy():
    model = gru_with_prior()
    data = _sequences(32, 5)
    fit(model, data, data, TrainConfig(lr=0.05, epochs=2, batch_size=16))
    curve = robustness_curve(model, data, (0.0, 0.5, 0.9), scheme="random")
    assert curve.accuracy[0] == accuracy(model, data)
    with pytest.raises(ValueError, match="fractions must increase from 0"):
        robustness_curve(model, data, (0.1, 0.5))


# ---------------------------------------------------------------------------------------
# the masked MLP
# ---------------------------------------------------------------------------------------


def test_masked_linear_keeps_masked_weights_zero_and_their_gradients_zero():
    layer = MaskedLinear(4, 3)
    mask = torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    layer.set_mask("weight", mask)
    assert bool((layer.weight[~mask] == 0).all())
    layer(torch.randn(5, 4)).sum().backward()
    assert bool((layer.weight.grad[~mask] == 0).all()) and bool((layer.weight.grad[mask] != 0).any())
    (weight, scale), = layer.mask_pairs()
    assert weight is layer.weight and torch.equal(scale, mask.float())
    with pytest.raises(ValueError, match="weight_name must be 'weight'"):
        layer.set_mask("bias", mask)
    with pytest.raises(ValueError, match="shape"):
        layer.set_mask("weight", torch.ones(4, 3, dtype=torch.bool))
    clone = copy.deepcopy(layer)
    assert torch.equal(clone.masks["weight"], mask)
    layer.set_mask("weight", None)
    assert layer.masks == {} and layer.mask_pairs() == []


def test_the_mlp_trains_through_fit_on_fixed_inputs():
    train, test = toy(256, 0), toy(128, 1)
    assert train.inputs.shape == (256, 1, 4) and train.classes == 2 and len(train) == 256
    torch.manual_seed(0)
    model = MaskedMLP((4, 8, 2))
    history = fit(model, train, test, TrainConfig(lr=0.02, epochs=8, batch_size=32))
    assert history.final["test_acc"] > 0.9
    assert history.final["test_acc"] == pytest.approx(accuracy(model, test))
    assert [c.name for c in weight_classes(model, readout=True)] == ["hidden.0.weight", "readout.weight"]


def test_fixed_inputs_and_mlp_check_their_arguments():
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        FixedInputs.from_arrays(torch.zeros(3, 2), torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="features must be"):
        FixedInputs.from_arrays(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="sizes must be"):
        MaskedMLP((4,))


def test_a_masked_linear_loads_the_mask_of_a_state_dict_it_did_not_have():
    from rnn_models.mlp import MaskedLinear

    source = MaskedLinear(4, 3, mask=torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) < 0.5)
    target = MaskedLinear(4, 3)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.masks["weight"], source.masks["weight"])
    assert torch.equal(target.weight, source.weight)
    plain = MaskedLinear(4, 3)
    plain.load_state_dict(torch.nn.Linear(4, 3).state_dict())  # a dense state dict keeps "no mask"
    assert plain.masks == {}


def test_a_copied_masked_linear_still_masks_its_gradients():
    import copy
    import pickle

    from rnn_models.mlp import MaskedLinear

    mask = torch.rand(3, 4, generator=torch.Generator().manual_seed(1)) < 0.5
    for clone in (copy.deepcopy(MaskedLinear(4, 3, mask=mask)), pickle.loads(pickle.dumps(MaskedLinear(4, 3, mask=mask)))):
        clone(torch.randn(2, 4)).sum().backward()
        assert bool((clone.weight.grad[~mask] == 0).all()) and bool((clone.weight.grad[mask] != 0).any())


# ------------------------------------------------------------------ the study's curves side by side


def test_the_study_benchmark_skips_without_the_reference_folder(tmp_path, monkeypatch, capsys):
    from benchmarks import bench_prune_study

    monkeypatch.setenv(bench_prune_study.ENV, str(tmp_path / "absent"))
    assert bench_prune_study.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("skipped: the study's reference folder is absent (set GRAPHPRIOR_STIER2021")


def test_the_study_benchmark_tabulates_ours_next_to_theirs(tmp_path, monkeypatch, capsys):
    """A reference folder in the study's layout (tiny): our levels next to its first and last epochs."""
    from benchmarks import bench_prune_study
    from reber.grammar import get_grammar
    from reber.tasks import write_csv

    (tmp_path / "prune").mkdir()
    (tmp_path / "dataset").mkdir()
    strings = get_grammar("reber").sample(20, seed=0)
    for name in ("train_data.csv", "test_data.csv"):
        write_csv(tmp_path / "dataset" / name, strings + [s[:-1] + "Q" for s in strings], [1] * 20 + [0] * 20)
    rows = ["mode,prune,epoch,train_loss,train_acc,test_loss,test_acc,time"]
    rows += [f"gru,0,{epoch},0,0,0,{(500 + 10 * epoch) / 1000},1" for epoch in (1, 2, 3)]
    rows += [f"gru,50,{epoch},0,0,0,{(500 + 100 * run + 10 * epoch) / 1000},1" for run in range(3) for epoch in (0, 1)]
    (tmp_path / "prune" / "gru.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setenv(bench_prune_study.ENV, str(tmp_path))
    assert bench_prune_study.study_curve(tmp_path, "gru") == {0: (0.51, 0.53), 50: (0.5, 0.51)}
    assert bench_prune_study.study_curve(tmp_path, "gru", "hh") == {0: (0.51, 0.53), 50: (0.7, 0.71)}
    assert bench_prune_study.main(["--cells", "gru", "--levels", "50", "--train-size", "30", "--test-size", "30",
                                   "--epochs", "1", "--retrain", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3x50 stacks on the study's strings: 30 train / 30 test")
    (fifty,) = [line for line in lines if line.startswith("| 50 % |")]
    assert fifty.endswith("| 0.500 / 0.510 |")
