"""The documentation site builds strictly (a broken link, reference or docstring fails), and
the notebooks are stored without outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    result = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return out


def test_the_cli_reference_documents_every_subcommand(site):
    from graphprior.cli import SUBCOMMANDS

    page = (site / "cli" / "index.html").read_text()
    for name in SUBCOMMANDS:
        assert f"graphprior {name}" in page, name
    assert "graphprior reber benchmark" in page and "--first-seed" in page


def test_the_api_reference_renders_the_docstrings(site):
    assert "graphprior.plots.mask_heatmap" in (site / "api" / "graphprior" / "index.html").read_text()
    assert "reber.metrics.hs_success" in (site / "api" / "reber" / "index.html").read_text()
    assert "rnn_models.train.fit" in (site / "api" / "rnn_models" / "index.html").read_text()


def test_the_benchmarks_page_holds_the_hs_table(site):
    page = (site / "benchmarks" / "index.html").read_text()
    assert 'id="hochreiter-schmidhuber-1997-embedded-reber"' in page
    assert "LSTM (H&amp;S 1997, published)" in page and "lstm + watts_strogatz" in page


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_stored_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), \
        f"strip {path.name}: nbstripout notebooks/*.ipynb"


def test_the_notebooks_are_found():
    assert {"01_quickstart.ipynb", "02_structure_predicts_performance.ipynb", "03_sparsity.ipynb"} <= \
        {p.name for p in NOTEBOOKS}
