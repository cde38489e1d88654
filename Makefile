# Everything a fresh Python 3.11 machine needs, from the package registry only.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WHEELS := .cache/wheels
PINS   := requirements/pins.txt
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check -c $(PINS)

.PHONY: setup demo test test-slow clean

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-runs only when the project's requirements change: a second `make test` reinstalls nothing.
$(STAMP): pyproject.toml $(PINS) scripts/build_learn2learn.sh | $(PY)
	$(PIP) "cython>=3,<4" setuptools wheel numpy
	scripts/build_learn2learn.sh $(PY) $(WHEELS)
	$(PIP) $(WHEELS)/learn2learn-0.2.0-*.whl
	$(PIP) --find-links $(WHEELS) -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lit-meta fit --config configs/sinusoid_maml.yaml

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(WHEELS) lightning_logs
