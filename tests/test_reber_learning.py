"""A small LSTM learns embedded Reber next-symbol prediction to the Hochreiter &
Schmidhuber (1997) success criterion, on the disjoint test set, in a few seconds."""

from __future__ import annotations

import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from reber.metrics import hs_success, symbol_accuracy
from reber.tasks import next_symbol_data

MAX_EPOCHS = 400


class NextSymbolLSTM(torch.nn.Module):
    def __init__(self, vocabulary: int, hidden: int) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(vocabulary, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocabulary)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(inputs)[0])



def test_small_lstm_meets_the_success_criterion_on_embedded_reber(one_thread):
    train, test = next_symbol_data(grammar="embedded", n_train=256, n_test=256, seed=0)
    torch.manual_seed(2)
    model = NextSymbolLSTM(len(train.vocabulary), hidden=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    success = 0.0
    for epoch in range(MAX_EPOCHS):
        model.train()
        for batch in train.loader(batch_size=64, seed=epoch):
            loss = binary_cross_entropy_with_logits(
                model(batch["inputs"]), batch["targets"], weight=batch["weights"].unsqueeze(-1)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            success = hs_success(model(test.inputs), test.targets, test.lengths)
        if success == 1.0:
            break
    assert success == 1.0, f"H&S success on the test set after {epoch + 1} epochs: {success:.3f}"
    with torch.no_grad():
        assert hs_success(model(train.inputs), train.targets, train.lengths) == 1.0
        assert symbol_accuracy(model(test.inputs), test.targets, test.lengths) == 1.0
