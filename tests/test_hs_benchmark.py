"""graphprior.hs_benchmark: the Hochreiter & Schmidhuber (1997) embedded-Reber protocol."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from graphprior import hs_benchmark as hs
from reber.metrics import hs_success
from reber.tasks import next_symbol_data
from rnn_models.train import TrainConfig, fit

# mini-batch mode solves in a few seconds (online: about 1 ms per sequence, 5,000-20,000 sequences)
FAST = hs.Protocol(hidden_size=32, batch_size=16, lr=0.02, budget=60_000, check_every=256)
SOLVES = 2  # a seed FAST solves in 13,824 sequences (about 3 s; seed 0 takes 98,560)


def test_a_trial_stops_when_the_criterion_holds_on_test_and_training_strings(one_thread):
    spec = hs.TrialSpec("lstm", "dense", SOLVES, FAST)
    train, test = next_symbol_data("embedded", FAST.n_train, FAST.n_test, seed=SOLVES)
    model = hs.build_model(spec, len(train.vocabulary), None)
    check = hs.SolvedCheck(train, test, FAST)
    config = TrainConfig(optimizer="adam", lr=FAST.lr, batch_size=FAST.batch_size, epochs=FAST.budget // 256,
                         seed=SOLVES, bucket=False)
    history = fit(model, train, test, config, hooks=[check])
    assert check.solved_after is not None and check.solved_after % FAST.check_every == 0
    assert history.reason == f"solved after {check.solved_after} sequences"
    assert len(history.epochs) == check.solved_after // FAST.n_train  # stopped in the epoch it solved
    with torch.no_grad():
        for data in (test, train):
            assert hs_success(model(data.inputs, data.lengths), data.targets, data.lengths) == 1.0


def test_run_trial_reports_the_sequences_it_took(one_thread):
    trial = hs.run_trial(hs.TrialSpec("lstm", "dense", SOLVES, FAST))
    assert trial.solved and 0 < trial.sequences <= FAST.budget and trial.sequences % FAST.check_every == 0
    assert (trial.model, trial.density) == ("lstm", 1.0)


def test_an_unsolved_trial_stops_at_the_budget(one_thread):
    protocol = hs.Protocol(hidden_size=4, batch_size=8, budget=96, check_every=32, n_train=64, n_test=32)
    trial = hs.run_trial(hs.TrialSpec("gru", "barabasi_albert", 3, protocol))
    assert not trial.solved and math.isnan(trial.sequences)
    assert trial.model == "gru + barabasi_albert" and 0 < trial.density < 1


def test_solved_check_counts_sequences_exactly_across_epochs():
    protocol = hs.Protocol(batch_size=100, n_train=256)
    check = hs.SolvedCheck(None, None, protocol)
    # epoch 1: steps 1-3 (100, 100, 56 sequences); epoch 2: steps 4-5
    assert [check.seen(1, s) for s in (1, 2, 3)] == [100, 200, 256]
    assert [check.seen(2, s) for s in (4, 5)] == [356, 456]


def test_solved_check_tests_every_check_every_sequences_and_stops_at_the_budget():
    protocol = hs.Protocol(batch_size=1, budget=10, check_every=4, n_train=256)
    check = hs.SolvedCheck(None, None, protocol)
    asked = []
    check.solved = lambda model: asked.append(state.step) or False
    stops = []
    state = SimpleNamespace(epoch=1, step=0, model=None, stop=stops.append)
    for step in range(1, 11):
        state.step = step
        check.after_step(state)
    assert asked == [4, 8, 10] and stops == ["budget of 10 sequences spent"]


def test_prior_masks_are_symmetric_graphs_of_about_four_neighbours():
    assert hs.prior_mask("dense", 16, 0) is None
    for prior in ("watts_strogatz", "barabasi_albert", "erdos_renyi_gnp"):
        mask = hs.prior_mask(prior, 32, 1)
        assert mask.shape == (32, 32) and torch.equal(mask, mask.T) and not mask.diagonal().any()
        assert 2.5 <= mask.sum(1).float().mean() <= 4.5, prior


def test_trial_specs_interleave_models_so_a_cut_run_stays_fair():
    specs = hs.trial_specs(["lstm"], ["dense", "watts_strogatz"], 2, FAST)
    assert [(s.model, s.seed) for s in specs] == [("lstm", 0), ("lstm + watts_strogatz", 0),
                                                  ("lstm", 1), ("lstm + watts_strogatz", 1)]


@pytest.mark.parametrize(("make", "message"), [
    (lambda: hs.Protocol(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (lambda: hs.Protocol(batch_size=300), r"batch_size must be <= n_train \(256\), got 300"),
    (lambda: hs.Protocol(budget=1.5), "budget must be an integer >= 1, got 1.5"),
    (lambda: hs.TrialSpec("transformer", "dense", 0, FAST), "cell must be one of"),
    (lambda: hs.TrialSpec("lstm", "lattice", 0, FAST), "prior must be one of"),
    (lambda: hs.trial_specs(["lstm"], ["dense"], 0, FAST), "trials must be >= 1, got 0"),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_summary_puts_the_published_row_first_and_counts_solved_trials():
    trials = hs.trials_frame([
        hs.Trial("lstm", "lstm", "dense", 0, True, 1000.0, 1.0, 1.0),
        hs.Trial("lstm", "lstm", "dense", 1, True, 3000.0, 1.0, 1.0),
        hs.Trial("lstm", "lstm", "dense", 2, False, math.nan, 1.0, 1.0),
        hs.Trial("gru", "gru", "dense", 0, False, math.nan, 1.0, 1.0),
    ])
    table = hs.summary(trials)
    assert table.iloc[0].to_dict() == {**hs.PUBLISHED, "median_sequences": pytest.approx(math.nan, nan_ok=True),
                                       "mask_density": 1.0}
    lstm = table.set_index("model").loc["lstm"]
    assert (lstm.trials, lstm.solved, lstm.mean_sequences, lstm.median_sequences) == (3, 2, 2000.0, 2000.0)
    assert math.isnan(table.set_index("model").loc["gru", "mean_sequences"])
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in hs.summary_markdown(table).splitlines()]
    assert rows[2] == ["LSTM (H&S 1997, published)", "150", "148", "8,440", "-", "1.00"]
    assert rows[3] == ["lstm", "3", "2", "2,000", "2,000", "1.00"]
    assert list(hs.summary(trials, published=False).model) == ["lstm", "gru"]
