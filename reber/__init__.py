"""Reber-grammar benchmarks: grammars as data, tasks tensorized once, metrics.

* :mod:`reber.grammar` -- automata (plain, embedded, continual stream): sampling with
  exact length windows, validity, next-symbol sets, probabilities, enumeration.
* :mod:`reber.tasks` -- classification, next-symbol and continual prediction as
  ``EncodedDataset`` tensors; length-bucketed batching; the study's CSV format.
* :mod:`reber.metrics` -- symbol/string accuracy, the Hochreiter & Schmidhuber success
  criterion, binary accuracy, ROC AUC.

Depends on numpy, scipy, pandas, scikit-learn and torch only; never on ``graphprior``
or ``rnn_models``.
"""

from reber.grammar import EMBEDDED_REBER, REBER, ContinualReber, Grammar, embed, get_grammar

__all__ = ["Grammar", "ContinualReber", "REBER", "EMBEDDED_REBER", "embed", "get_grammar"]
