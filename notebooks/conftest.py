"""The notebooks run in the test suite (nbmake, ``--nbmake`` in setup.cfg): mark them
``notebook`` so ``pytest -m "not notebook"`` can leave them out."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
