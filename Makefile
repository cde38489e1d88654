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

# Meta-train sinusoid MAML++ (MAML with learned per-step rates and the multi-step loss; meta-test on
# 5-shot tasks at the end), then meta-test the same best checkpoint on 10-shot tasks. Results:
# lightning_logs/demo*/meta_test.json. Plain MAML: `lit-meta fit --config configs/sinusoid_maml.yaml`.
DEMO_CONFIG := --config configs/sinusoid_maml.yaml --config configs/sinusoid_maml_plus_plus.yaml
demo: $(STAMP)
	rm -rf lightning_logs/demo lightning_logs/demo-10shot
	$(VENV)/bin/lit-meta fit $(DEMO_CONFIG) --trainer.logger.init_args.version demo
	$(VENV)/bin/lit-meta test $(DEMO_CONFIG) --trainer.logger.init_args.version demo-10shot \
		--data.eval_shots 10 --ckpt_path lightning_logs/demo/checkpoints/best.ckpt

# The formatter and linter first (ruff, configured in pyproject.toml): a CI run fails on either. Then
# the suite on two workers (pytest-xdist): many tests wait on subprocesses (DDP ranks, Flower, PostgreSQL).
test: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(WHEELS) lightning_logs
