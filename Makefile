# Everything a fresh Python 3.11 machine needs, from the package registry only.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WHEELS := .cache/wheels
PINS   := requirements/pins.txt
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check -c $(PINS)
# Where the datamodules find their data (lit_meta.paths; a user's default is ~/.cache/lit-meta).
export LIT_META_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test test-slow clean docs package-check

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-runs only when the project's requirements change: a second `make test` reinstalls nothing.
# learn2learn 0.2.0 is built for Python >= 3.11 by the file a pip user runs as `lit-meta install-learn2learn`.
$(STAMP): pyproject.toml $(PINS) lit_meta/learn2learn_build.py | $(PY)
	$(PIP) "cython>=3,<4" setuptools wheel numpy
	$(PY) lit_meta/learn2learn_build.py --python $(PY) --wheel-dir $(WHEELS) --no-install
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
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site
	$(PY) -m pytest -q -n 2

# The documentation site (mkdocs.yml, docs/) into site/; strict: a broken link, reference or snippet or a
# docstring warning fails the build. `make test` runs the same build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# lit-meta as a user installs it: the sdist and wheel built and checked, the wheel installed into a fresh
# virtual environment, and `lit-meta new`, `fit`, `test` and a user's own learner run outside this checkout.
package-check: $(STAMP)
	scripts/check_package.sh $(PY)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(WHEELS) lightning_logs
