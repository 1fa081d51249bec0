"""Sparsity during learning (rnn_models.dynamic): SET, RigL and DNW as hooks on fit, structure
tracking, early freezing."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_models.config import TrainConfig
from rnn_models.dynamic import (DNW, RigL, SET, DynamicSparsity, Schedule, allocate, hamming, jaccard,
                                sparse_matrices)
from rnn_models.layered import LayeredRNN
from rnn_models.masked import make_rnn, open_forget_gate
from rnn_models.mlp import MaskedLinear
from rnn_models.train import Hook, SequenceClassifier, TrainState, fit
from test_pruning import layered  # widths 3-2-2, a skip 0 -> 2, input size 4


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread avoids oversubscription


@dataclass
class Sequences:
    """A toy classification dataset for fit: the sign of the sum of feature 0 decides."""

    inputs: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    task: str = "classify"
    weights: torch.Tensor | None = None


def sequences(n: int = 32, seed: int = 0) -> Sequences:
    x = torch.randn(n, 5, 4, generator=torch.Generator().manual_seed(seed))
    return Sequences(x, torch.full((n,), 5), (x[:, :, 0].sum(1) > 0).float())


def classifier(cell: str = "gru", hidden: int = 6, hh_mask: torch.Tensor | None = None) -> SequenceClassifier:
    torch.manual_seed(0)
    return SequenceClassifier(make_rnn(cell, 4, hidden, batch_first=True, hh_mask=hh_mask))


CONFIG = TrainConfig(lr=0.05, epochs=2, batch_size=8)
EVERY_STEP = Schedule(update_every=1, drop_fraction=0.5, end_step=1000)


def holder_alive(m) -> torch.Tensor:
    """A matrix's connections alive in its holder's mask (checked equal across gate blocks)."""
    entries = m.weight_class.mask().reshape(-1)[m.entries]
    assert bool((entries == entries[0]).all())
    return entries[0]


class Watch(Hook):
    """After every step (after the dynamic hook): each matrix's alive count, the holder masks,
    and what changed, for the assertions of a test."""

    def __init__(self, sparse: DynamicSparsity, check=None) -> None:
        self.sparse, self.check = sparse, check
        self.counts: list[list[int]] = []
        self.changes = 0
        self.previous: list[torch.Tensor] = []

    def on_train_begin(self, state: TrainState) -> None:
        self.previous = [m.alive.clone() for m in self.sparse.matrices]

    def after_step(self, state: TrainState) -> None:
        self.counts.append([int(holder_alive(m).sum()) for m in self.sparse.matrices])
        for m, before in zip(self.sparse.matrices, self.previous):
            assert torch.equal(holder_alive(m), m.alive)
            if not torch.equal(before, m.alive):
                self.changes += 1
                if self.check is not None:
                    self.check(state, m, before & ~m.alive, m.alive & ~before)
        self.previous = [m.alive.clone() for m in self.sparse.matrices]


# ---------------------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------------------


def test_schedule_decays_the_drop_fraction_by_a_cosine_until_the_end_step():
    schedule = Schedule(update_every=10, drop_fraction=0.4, end_step=100)
    assert schedule.fraction(10) == pytest.approx(0.2 * (1 + math.cos(math.pi / 10)))
    assert schedule.fraction(50) == pytest.approx(0.2)
    assert [schedule.fraction(t) for t in (0, 5, 11, 100, 110)] == [0.0] * 5
    for kwargs in ({"update_every": 0}, {"drop_fraction": 1.5}, {"end_step": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            Schedule(**kwargs)


def test_allocate_uniform_and_erdos_renyi_by_hand():
    assert allocate([100, 16], [(10, 10), (4, 4)], 0.5) == [50, 8]
    # ERK: raw 0.2 and 0.5; eps = 58 / 28 makes the small matrix exceed 1, so it is dense
    # and the big one takes the remaining 42
    assert allocate([100, 16], [(10, 10), (4, 4)], 0.5, "erk") == [42, 16]
    # raw 0.2 and 0.52, eps = 60 / 72: 16.7 and 43.3 connections
    assert allocate([100, 100], [(10, 10), (2, 50)], 0.3, "erk") == [17, 43]
    with pytest.raises(ValueError, match="allocation"):
        allocate([4], [(2, 2)], 0.5, "global")
    with pytest.raises(ValueError, match="density"):
        allocate([4], [(2, 2)], 0.0)


def test_overlap_metrics_by_hand():
    a = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    assert jaccard(a, b) == pytest.approx(2 / 4)
    assert hamming(a, b) == pytest.approx(2 / 5)
    empty = torch.zeros(3, dtype=torch.bool)
    assert jaccard(empty, empty) == 1.0 and hamming(empty, empty) == 0.0
    with pytest.raises(ValueError, match="masks"):
        jaccard(a, b[:4])


@given(st.lists(st.booleans(), min_size=1, max_size=30), st.randoms())
@settings(max_examples=30, deadline=None)
def test_overlap_metrics_match_sets(bits, rnd):
    other = [rnd.random() < 0.5 for _ in bits]
    a, b = torch.tensor(bits), torch.tensor(other)
    sa, sb = {i for i, x in enumerate(bits) if x}, {i for i, x in enumerate(other) if x}
    assert jaccard(a, b) == pytest.approx(len(sa & sb) / len(sa | sb) if sa | sb else 1.0)
    assert hamming(a, b) == pytest.approx(len(sa ^ sb) / len(bits))


def test_shared_gates_pair_the_same_entry_of_every_gate_block():
    model = classifier("lstm", hidden=4)
    shared = {m.name: m for m in sparse_matrices(model)}
    hh = shared["rnn.weight_hh_l0"]
    assert hh.entries.shape == (4, 16) and hh.shape == (4, 4)
    assert torch.equal(hh.entries, torch.arange(64).view(4, 16))
    per_gate = sparse_matrices(model, shared_gates=False)
    assert len(per_gate) == 8 and all(m.entries.shape[0] == 1 for m in per_gate)
    open_forget_gate(model.rnn)
    with pytest.raises(ValueError, match="shared_gates=False"):
        sparse_matrices(model)


def blocks(net: LayeredRNN, j: int, weight: str) -> torch.Tensor:
    """Where the blocks of ``net.layers[j]`` live in ``weight``; the rest are structural zeros."""
    inside = torch.zeros_like(getattr(net.layers[j], weight), dtype=torch.bool)
    for b in range(len(net.block_sources(j))):
        inside[net.block_slices(j, b)[weight]] = True
    return inside


def test_layered_candidates_are_the_blocks_own_entries():
    net = layered()
    for m in sparse_matrices(net):
        layer, weight = m.weight_class.holder, m.weight_class.weight
        j = next(i for i, candidate in enumerate(net.layers) if candidate is layer)
        assert bool(blocks(net, j, weight).view(-1)[m.entries].all())


# ---------------------------------------------------------------------------------------
# SET and RigL through fit
# ---------------------------------------------------------------------------------------


@given(cell=st.sampled_from(["rnn_tanh", "gru", "lstm"]), algorithm=st.sampled_from([SET, RigL]),
       shared=st.booleans(), allocation=st.sampled_from(["uniform", "erk"]),
       density=st.sampled_from([0.2, 0.5]))
@settings(max_examples=10, deadline=None)
def test_density_is_constant_at_every_update(cell, algorithm, shared, allocation, density):
    model = classifier(cell)
    sparse = algorithm(density, schedule=EVERY_STEP, allocation=allocation, shared_gates=shared)
    watch = Watch(sparse)
    history = fit(model, sequences(), sequences(16, 1), CONFIG, hooks=[sparse, watch])
    counts = [m.count for m in sparse.matrices]
    sizes = [m.allowed.numel() for m in sparse.matrices]
    assert counts == allocate(sizes, [m.shape for m in sparse.matrices], density, allocation)
    assert all(step == counts for step in watch.counts) and watch.changes > 0
    assert len({e["mask_density"] for e in history.epochs}) == 1


def test_nothing_outside_a_confining_prior_is_ever_grown():
    prior = torch.rand(6, 6, generator=torch.Generator().manual_seed(3)) < 0.5
    model = classifier("gru", hh_mask=prior)
    outside = ~prior.repeat(3, 1)

    def check(state, m, dropped, grown):
        weight = model.rnn.weight_hh_l0
        assert not bool(model.rnn.masks["weight_hh_l0"][outside].any())
        assert bool((weight[outside] == 0).all())

    sparse = RigL(0.5, schedule=EVERY_STEP, confine=True)
    watch = Watch(sparse, check)
    fit(model, sequences(), sequences(16, 1), CONFIG, hooks=[sparse, watch])
    hh = next(m for m in sparse.matrices if m.name.endswith("weight_hh_l0"))
    assert torch.equal(hh.allowed, prior.flatten()) and hh.count == round(0.5 * int(prior.sum()))
    assert watch.changes > 0


@pytest.mark.parametrize("algorithm, optimizer", [(RigL, "adam"), (SET, "adam"), (RigL, "sgd")])
def test_dropped_weights_are_zero_and_optimizer_state_is_reset(algorithm, optimizer):
    model = classifier("lstm")
    seen = []

    def check(state, m, dropped, grown):
        weight = m.values
        moments = [v for v in state.optimizer.state[weight].values() if v.shape == weight.shape]
        assert moments
        for which in (dropped, grown):
            index = m.entries[:, which].reshape(-1)
            assert all(bool((v.view(-1)[index] == 0).all()) for v in moments)
        assert bool((weight.view(-1)[m.entries[:, dropped].reshape(-1)] == 0).all())
        new = weight.view(-1)[m.entries[:, grown].reshape(-1)]
        if algorithm is RigL:
            assert bool((new == 0).all())
        else:
            assert bool((new != 0).all()) and float(new.detach().abs().max()) < 0.1
        seen.append(int(dropped.sum()))

    config = TrainConfig(optimizer=optimizer, momentum=0.9, lr=0.05, epochs=1, batch_size=8)
    sparse = algorithm(0.4, schedule=EVERY_STEP)
    fit(model, sequences(), sequences(16, 1), config, hooks=[sparse, Watch(sparse, check)])
    assert seen and sum(seen) > 0


def test_free_growth_from_a_prior_start_keeps_the_prior_counts_and_may_leave_it():
    prior = torch.rand(6, 6, generator=torch.Generator().manual_seed(4)) < 0.3
    model = classifier("gru", hh_mask=prior)
    sparse = SET(schedule=EVERY_STEP)
    watch = Watch(sparse)
    fit(model, sequences(), sequences(16, 1), CONFIG, hooks=[sparse, watch])
    hh = next(m for m in sparse.matrices if m.name.endswith("weight_hh_l0"))
    assert hh.count == int(prior.sum()) and int(hh.alive.sum()) == hh.count
    assert bool((hh.alive & ~prior.flatten()).any())


def test_layered_networks_never_grow_off_block_entries():
    net = layered("gru")
    model = SequenceClassifier(net)
    structural = {(j, w): ~blocks(net, j, w) for j, layer in enumerate(net.layers) for w in layer.masks}
    sparse = RigL(0.5, schedule=EVERY_STEP, allocation="erk")
    watch = Watch(sparse)
    fit(model, sequences(), sequences(16, 1), CONFIG, hooks=[sparse, watch])
    assert watch.changes > 0 and all(step == watch.counts[0] for step in watch.counts)
    assert any(bool(off.any()) for off in structural.values())
    for (j, w), off in structural.items():
        assert not bool(net.layers[j].masks[w][off].any())
        assert bool((getattr(net.layers[j], w)[off] == 0).all())


# ---------------------------------------------------------------------------------------
# RigL's dense gradient
# ---------------------------------------------------------------------------------------


def manual_update(model, sparse, loss_fn) -> None:
    """One training step of ``sparse`` by hand (lr 0: the weights stay), an update step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    state = TrainState([model], model, optimizer, TrainConfig())
    sparse.on_train_begin(state)
    sparse.before_batch(state)
    loss_fn(model).backward()
    sparse.before_step(state)
    optimizer.step()
    state.step = 1
    sparse.after_step(state)
    sparse.on_train_end(state)


def test_rigl_grows_where_the_dense_gradient_is_largest_on_a_constructed_example():
    layer = MaskedLinear(4, 3, bias=False, mask=torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]]).bool())
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.1, 9.0, 9.0], [0.3, 9.0, 9.0, 9.0], [9.0, 9.0, -0.2, 0.7]]))
    layer.apply_masks()
    gradient = torch.tensor([[0.0, 0.0, 5.0, -0.5], [0.0, -4.0, 1.0, 0.1], [3.0, 0.2, 0.0, 0.0]])
    schedule = Schedule(update_every=1, drop_fraction=0.8, end_step=10**6)
    sparse = RigL(schedule=schedule)
    manual_update(layer, sparse, lambda m: (m.weight * gradient).sum())
    # 5 alive, k = round(0.8 * 5) = 4: drop -0.1, -0.2, 0.3, 0.5; grow 5.0, -4.0, 3.0, 1.0
    expected = torch.tensor([[0, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]]).bool()
    assert torch.equal(layer.masks["weight"], expected)
    assert layer.weight[expected].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.7])  # grown at zero
    assert torch.equal(layer.weight.grad, gradient * torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1.]]))
    assert sparse.dense_gradient_entries == 7 and sparse.dense_gradient_passes == 1
    assert "gradient_tap" not in layer.__dict__


@pytest.mark.parametrize("make", [lambda: classifier("lstm", hh_mask=torch.eye(6, dtype=torch.bool)),
                                  lambda: SequenceClassifier(layered("lstm"))], ids=["lstm", "layered"])
def test_rigl_reads_the_dense_gradient_of_the_fused_kernels(make):
    model, data = make(), sequences(8)

    def loss(m):
        return torch.nn.functional.binary_cross_entropy_with_logits(m(data.inputs, data.lengths), data.targets)

    reference = copy.deepcopy(model)
    for holder in [m for m in reference.modules() if hasattr(m, "maskable_weights")]:
        for weight in list(holder.masks):
            holder.set_mask(weight, None)
    loss(reference).backward()
    dense = {name: p.grad for name, p in reference.named_parameters()}
    sparse = RigL(schedule=Schedule(update_every=1, drop_fraction=0.3, end_step=10**6))
    before = {m.name: (m.alive.clone(), m.count) for m in sparse_matrices(model)}
    names = {id(p): name for name, p in model.named_parameters()}
    manual_update(model, sparse, loss)
    grown_any = False
    for m in sparse.matrices:
        alive, count = before[m.name]
        grown = m.alive & ~alive
        k = int(grown.sum())
        assert int(m.alive.sum()) == count
        if k:
            grown_any = True
            scores = m.score(dense[names[id(m.values)]]).masked_fill(alive, -1.0)
            assert torch.equal(grown, torch.zeros_like(grown).index_fill(0, torch.topk(scores, k).indices, True))
    assert grown_any


# ---------------------------------------------------------------------------------------
# DNW
# ---------------------------------------------------------------------------------------


class ForwardWeights(Hook):
    """Records the GRU's hh weights as its forward pass sees them, and the dense weights
    and gradients DNW restores before the optimizer step."""

    def __init__(self, rnn) -> None:
        self.rnn = rnn
        self.forward, self.dense, self.grads = [], [], []
        rnn.register_forward_pre_hook(self._seen)

    def _seen(self, module, args) -> None:
        if module.training:
            self.forward.append(module.weight_hh_l0.detach().clone())

    def before_step(self, state: TrainState) -> None:
        self.dense.append(self.rnn.weight_hh_l0.detach().clone())
        self.grads.append(self.rnn.weight_hh_l0.grad.clone())


def test_dnw_forward_uses_exactly_the_top_k_and_gradients_reach_all_weights():
    model = classifier("gru")
    sparse = DNW(0.3)
    seen = ForwardWeights(model.rnn)
    fit(model, sequences(), sequences(16, 1), CONFIG, hooks=[sparse, seen])
    hh = next(m for m in sparse.matrices if m.name.endswith("weight_hh_l0"))
    k = hh.count
    assert k == round(0.3 * 36)
    masks = []
    for forward, dense, grad in zip(seen.forward, seen.dense, seen.grads):
        score = dense.abs().view(3, 36).sum(0)
        top = torch.zeros(36, dtype=torch.bool)
        top[torch.topk(score, k).indices] = True
        keep = top.view(6, 6).repeat(3, 1)
        assert torch.equal(forward, dense * keep)
        assert bool((grad[~keep] != 0).any())  # the gradient reaches the weights left out
        masks.append(top)
    assert len(seen.forward) == 8 and any(not torch.equal(a, b) for a, b in zip(masks, masks[1:]))
    final = model.rnn.masks["weight_hh_l0"]  # at the end the top-k are the masks: a sparse model
    assert int(final.sum()) == 3 * k and bool((model.rnn.weight_hh_l0[~final] == 0).all())


# ---------------------------------------------------------------------------------------
# structure emergence and early freezing
# ---------------------------------------------------------------------------------------


class DenseGradientProbe(Hook):
    """Per backward pass: whether a tap is set and whether the gradient the optimizer gets
    has entries outside the sparse mask (what a dense gradient would put there)."""

    def __init__(self, sparse: DynamicSparsity, model) -> None:
        self.sparse, self.model = sparse, model
        self.tapped: list[bool] = []
        self.outside: list[bool] = []
        model.rnn.register_forward_pre_hook(lambda module, args: self.tapped.append("gradient_tap" in module.__dict__)
                                            if module.training else None)

    def before_step(self, state: TrainState) -> None:
        outside = False
        for m in self.sparse.matrices:
            grad = m.values.grad.reshape(-1)[m.entries[:, ~m.alive].reshape(-1)]
            outside |= bool((grad != 0).any())
        self.outside.append(outside)


@pytest.mark.parametrize("algorithm", ["dnw", "rigl"])
def test_after_freezing_no_dense_gradient_is_computed(algorithm):
    model = classifier("gru")
    sparse = DNW(0.3, freeze_epoch=1) if algorithm == "dnw" else \
        RigL(0.3, schedule=Schedule(update_every=2, drop_fraction=0.5, end_step=10**6), freeze_epoch=1)
    probe = DenseGradientProbe(sparse, model)
    config = TrainConfig(lr=0.05, epochs=3, batch_size=8)
    history = fit(model, sequences(), sequences(16, 1), config, hooks=[sparse, probe])
    steps = 4  # per epoch
    assert sparse.frozen_epoch == 1
    assert [e["mask_frozen"] for e in history.epochs] == [1.0, 1.0, 1.0]
    entries = [e["dense_grad_entries"] for e in history.epochs]
    assert entries[0] > 0 and entries[1:] == [0.0, 0.0]
    assert sparse.dense_gradient_entries == entries[0]
    assert not any(probe.tapped[steps:]) and not any(probe.outside[steps:])
    if algorithm == "dnw":
        assert all(probe.outside[:steps]) and sparse.dense_gradient_passes == steps
    else:
        assert probe.tapped[:steps] == [False, True, False, True] and sparse.dense_gradient_passes == 2
    assert history.epochs[1]["mask_jaccard_prev"] == 1.0 and history.epochs[2]["mask_hamming_prev"] == 0.0


def test_freezing_by_overlap_threshold():
    sparse = RigL(0.5, schedule=EVERY_STEP, freeze_jaccard=0.0)
    fit(classifier("rnn_tanh"), sequences(), sequences(16, 1), CONFIG, hooks=[sparse])
    assert sparse.frozen_epoch == 1
    # the first epoch whose overlap with the one before reaches the threshold freezes it, not earlier
    watch = RigL(0.5, schedule=EVERY_STEP)
    history = fit(classifier("rnn_tanh"), sequences(), sequences(16, 1), CONFIG, hooks=[watch])
    overlaps = [e["mask_jaccard_prev"] for e in history.epochs]
    threshold = sorted(overlaps)[len(overlaps) // 2]
    expected = next(epoch for epoch, o in enumerate(overlaps, start=1) if o >= threshold)
    frozen = RigL(0.5, schedule=EVERY_STEP, freeze_jaccard=threshold)
    fit(classifier("rnn_tanh"), sequences(), sequences(16, 1), CONFIG, hooks=[frozen])
    assert frozen.frozen_epoch == expected


def test_epoch_overlaps_are_recorded_and_the_masks_kept():
    model = classifier("gru")
    sparse = SET(0.5, schedule=EVERY_STEP)
    history = fit(model, sequences(), sequences(16, 1), TrainConfig(lr=0.05, epochs=3, batch_size=8),
                  hooks=[sparse])
    masks = [sparse.initial_mask, *sparse.epoch_masks]
    assert len(sparse.epoch_masks) == 3
    for e, (before, after) in zip(history.epochs, zip(masks, masks[1:])):
        assert e["mask_jaccard_prev"] == pytest.approx(jaccard(before, after))
        assert e["mask_hamming_prev"] == pytest.approx(hamming(before, after))
        assert e["mask_jaccard_prev"] < 1.0
    final = sparse.overlap_with_final()
    assert [o["epoch"] for o in final] == [1, 2, 3]
    assert final[-1]["jaccard"] == 1.0 and final[-1]["hamming"] == 0.0
    assert final[0]["jaccard"] == pytest.approx(jaccard(masks[1], masks[3]))
    assert sparse.determined_epoch(1.0) == 3


def test_a_static_random_mask_is_the_base_hook():
    model = classifier("gru")
    sparse = DynamicSparsity(0.2)
    history = fit(model, sequences(), sequences(16, 1), CONFIG, hooks=[sparse])
    assert [e["mask_jaccard_prev"] for e in history.epochs] == [1.0, 1.0]
    assert int(model.rnn.masks["weight_hh_l0"].sum()) == 3 * round(0.2 * 36)


def test_bad_arguments_are_named():
    for kwargs, word in [({"density": 0.0}, "density"), ({"density": 0.5, "allocation": "x"}, "allocation"),
                         ({"allocation": "x"}, "allocation"), ({"confine": True}, "confine"),
                         ({"freeze_epoch": 0}, "freeze_epoch"), ({"freeze_jaccard": 2.0}, "freeze_jaccard")]:
        with pytest.raises(ValueError, match=word):
            RigL(**kwargs)
    with pytest.raises(ValueError, match="schedule"):
        SET(0.5, schedule=100)
    with pytest.raises(ValueError, match="grow_scale"):
        SET(0.5, grow_scale=-1.0)
    a, b = classifier(), classifier()
    state = TrainState([a, b], a, torch.optim.SGD(a.parameters(), lr=0.1), TrainConfig())
    with pytest.raises(ValueError, match="engine='separate'"):
        DNW(0.5).on_train_begin(state)


def test_rigl_managing_hh_only_ignores_the_other_masked_weights_of_its_holders():
    """A LayeredRNN's blocks mask their input weights too; RigL on ``weights="hh"`` taps only
    what it manages (this used to be a KeyError)."""
    from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure

    structure = LayeredStructure((3, 2), (LayerConnection(0, 1, torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)),))
    torch.manual_seed(0)
    model = SequenceClassifier(LayeredRNN(structure, 4, cell="gru", batch_first=True))
    g = torch.Generator().manual_seed(0)
    data = SimpleNamespace(task="classify", inputs=torch.randn(16, 5, 4, generator=g), lengths=torch.full((16,), 5),
                           targets=(torch.rand(16, generator=g) < 0.5).float(), weights=None)
    hook = RigL(0.5, Schedule(update_every=1, drop_fraction=0.3, end_step=4), weights="hh")
    history = fit(model, data, data, TrainConfig(epochs=2, batch_size=8), hooks=[hook])
    assert history.status == "done" and hook.dense_gradient_passes > 0


def test_masked_copy_holds_an_earlier_epochs_mask_and_leaves_the_model_alone():
    model = classifier("lstm")
    sparse = SET(0.5, schedule=EVERY_STEP, weights="hh")
    fit(model, sequences(), sequences(16, 1), TrainConfig(lr=0.05, epochs=3, batch_size=8), hooks=[sparse])
    first, final = sparse.epoch_masks[0], sparse.epoch_masks[-1]
    assert not torch.equal(first, final)  # SET changed the mask after epoch 1
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    copy_ = sparse.masked_copy(model, first)
    (m,) = sparse.matrices  # one hh matrix, gates shared: 4 blocks of 6 x 6
    hh = copy_.rnn.masks["weight_hh_l0"].reshape(4, 36)
    assert torch.equal(hh, first.expand(4, 36))  # every gate block holds epoch 1's connections
    assert torch.equal(model.rnn.masks["weight_hh_l0"].reshape(4, 36), final.expand(4, 36))
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # the model is untouched
    assert torch.equal(sparse.holder_masks()[(m.weight_class.holder, "weight_hh_l0")],
                       model.rnn.masks["weight_hh_l0"])
    with pytest.raises(ValueError, match="vector must be a mask_vector"):
        sparse.holder_masks(torch.ones(5, dtype=torch.bool))
