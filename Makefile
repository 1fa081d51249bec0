# Set-up and entry points. `make demo` and `make test` each build .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,ray]"
	touch $(STAMP)

# The toolkit's story in about two minutes on two cores: results/report.html and its pictures.
demo: $(STAMP)
	$(VENV)/bin/graphprior demo --out results

test: $(STAMP)
	$(PY) -m pytest -n 2 --timeout 900

# The documentation site (mkdocs, material theme, API pages from docstrings) into site/; any warning fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Every benchmark in its quick form; each prints a markdown table (see docs/benchmarks.md).
BENCHMARKS := bench_reber bench_priors bench_features bench_masked bench_layered bench_ensemble bench_sweep bench_predict_reference

bench: $(STAMP)
	$(PY) -m pip install -q --no-deps deepstruct==0.10.0  # the per-time-step loop bench_masked compares with
	for name in $(BENCHMARKS); do $(PY) -m benchmarks.$$name --quick || exit 1; done

clean:
	rm -rf $(VENV) results build site *.egg-info
