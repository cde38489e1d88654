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

.PHONY: setup demo test test-slow clean docs package-check bench-peers gpu-suite

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

# lit-meta against easyfsl and learn2learn's Lightning layer (benchmarks/peers.py; 10-15 minutes on 2 cores):
# the table goes to docs/benchmarks/peers.md and lightning_logs/bench_peers/peers.json. The peers live in their
# own virtual environment, which sees .venv's packages (one torch for both sides) through a .pth line.
PEERS_VENV  := .cache/peers-venv
PEERS_PY    := $(PEERS_VENV)/bin/python
PEERS_STAMP := $(PEERS_VENV)/.installed

$(PEERS_STAMP): requirements/peers.txt | $(STAMP)
	rm -rf $(PEERS_VENV)
	$(PY) -m venv $(PEERS_VENV)
	echo "import site; site.addsitedir('$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')')" \
		> "$$($(PEERS_PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/lit_meta_venv.pth"
	$(PEERS_PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/peers.txt
	touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)
	$(PY) benchmarks/peers.py --peers_python $(PEERS_PY)

# The benchmarks to run first on a lent GPU (benchmarks/gpu_suite.py, within 8 minutes), each part in its own
# process: the inner loop at meta-batch 32 in precisions 32, bf16 and 16, MAML's memory with and without
# `backward_per_task`, 2-process DDP (where there are 2 GPUs) and benchmarks/peers.py; one JSON file, a failed
# part recorded in it. No install step: the GPU machine runs the .venv built here.
gpu-suite:
	$(PY) benchmarks/gpu_suite.py --device cuda --output gpu_suite.json
