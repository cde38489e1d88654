#!/usr/bin/env bash
# `make package-check`: lit-meta as a user installs it, outside this repository.
#
# 1. Build the sdist and the wheel (`python -m build`) and check them (`twine check --strict`,
#    `check-wheel-contents`, the files a user needs: LICENSE, py.typed, the example templates).
# 2. Install the wheel into a fresh virtual environment. Its dependencies (torch, Lightning,
#    learn2learn, ...) are the development environment's, made visible by a `.pth` line, so nothing
#    is downloaded twice; lit_meta, datamodules and callbacks must come from the wheel (checked).
# 3. `lit-meta install-learn2learn` into it (from the wheel `make setup` cached: no download).
# 4. From a temporary folder: `lit-meta new` of the sinusoid example, `lit-meta fit` of it for a few
#    hundred steps, `lit-meta test` of its checkpoint, and the example's own learner (a module in
#    that folder) trained by class path, without PYTHONPATH.
#
# Usage: scripts/check_package.sh PYTHON (the development environment's interpreter)
set -euo pipefail
PY=${1:?the development environment\'s python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, the venv's link kept (not resolved)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STEPS=${LIT_META_PACKAGE_STEPS:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

echo "== build"
# No --sdist/--wheel: the wheel is built from the sdist, which must therefore hold everything.
"$PY" -m build --no-isolation --outdir "$work/dist" "$ROOT" > "$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/lit_meta-*.whl)
"$PY" -m twine check --strict "$work"/dist/*
"$PY" -m check_wheel_contents --ignore W009 "$wheel"  # W009: three top-level packages, by design
contents=$("$PY" -m zipfile -l "$wheel")
for needed in licenses/LICENSE lit_meta/py.typed datamodules/py.typed callbacks/py.typed \
  lit_meta/templates/sinusoid/; do
  grep -q "$needed" <<< "$contents" || { echo "error: the wheel lacks $needed" >&2; exit 1; }
done

echo "== install into a fresh virtual environment"
"$PY" -m venv "$work/venv"
site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$site/_development_dependencies.pth"
"$work/venv/bin/python" -m pip install --quiet --no-deps --no-index "$wheel"
mkdir "$work/user"
cd "$work/user"
export PATH="$work/venv/bin:$PATH"
"$work/venv/bin/python" - "$site" <<'EOF'
import sys
import callbacks, datamodules, lit_meta
for package in (lit_meta, datamodules, callbacks):
    if not package.__file__.startswith(sys.argv[1]):
        sys.exit(f"error: {package.__name__} was imported from {package.__file__}, not from the wheel")
print(f"lit-meta {lit_meta.__version__} from {lit_meta.__file__}")
EOF

echo "== lit-meta install-learn2learn (a pip user's step on Python >= 3.11; the wheel make setup built)"
# learn2learn is visible here already (the .pth above): pip is told to install it anyway, without its
# dependencies (visible too), so that the install itself is what is checked.
PIP_FORCE_REINSTALL=1 PIP_NO_DEPS=1 lit-meta install-learn2learn --wheel-dir "$ROOT/.cache/wheels"
"$work/venv/bin/python" -c "import learn2learn, sys; sys.exit(None if learn2learn.__file__.startswith('$site')
  else 'error: learn2learn was not installed into the fresh environment')"

echo "== lit-meta new, fit, test, and the user's own learner, from $work/user"
lit-meta new project --example sinusoid
cd project
quiet=(--trainer.enable_progress_bar=false --trainer.enable_model_summary=false)
lit-meta fit --config sinusoid_maml.yaml --trainer.max_steps="$STEPS" --test_after_fit=none \
  --trainer.logger.init_args.version=run "${quiet[@]}" > fit.log 2>&1 || { tail -30 fit.log; exit 1; }
ckpt=lightning_logs/run/checkpoints/last.ckpt
test -f "$ckpt" || { echo "error: no $ckpt after fit" >&2; exit 1; }
lit-meta test --config sinusoid_maml.yaml --ckpt_path "$ckpt" --data.test_tasks=50 \
  --trainer.logger.init_args.version=test "${quiet[@]}" > test.log 2>&1 || { tail -30 test.log; exit 1; }
grep -q "test/loss" test.log || { tail -30 test.log; exit 1; }
lit-meta fit --config my_learner.yaml --trainer.max_steps=20 --test_after_fit=none \
  --trainer.logger.init_args.version=mine "${quiet[@]}" > mine.log 2>&1 || { tail -30 mine.log; exit 1; }
test -f lightning_logs/mine/checkpoints/last.ckpt || { tail -30 mine.log; exit 1; }
echo "package check passed in $(( $(date +%s) - started )) s ($STEPS meta-steps)"
