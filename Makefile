# Set-up and entry points. `make demo` and `make test` each build .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/graphprior demo --out results

test: $(STAMP)
	$(PY) -m pytest -n 2 --timeout 900

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) results build *.egg-info
