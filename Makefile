# Two commands for a newcomer: `make demo` (the main job) and `make test` (the tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench lint clean

# rl_zoo3 goes in without its dependencies: deltanet reads only its tuned hyper-parameter YAML
# files (deltanet/zoo.py, which names the version), and its gymnasium<1.3 conflicts with our pin.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "rl_zoo3==$$($(PY) -c 'from deltanet.zoo import ZOO_VERSION; print(ZOO_VERSION)')"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench_reference.py

lint: $(STAMP)
	$(VENV)/bin/ruff check pysim hw sim deltanet scripts tests

clean:
	rm -rf build $(VENV)
