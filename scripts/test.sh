#!/usr/bin/env bash
# Install gafkit with its dev extras into a cached virtual environment, then lint and run the tests.
# Extra arguments go to pytest (e.g. `scripts/test.sh -m gpu` on a CUDA machine).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
# The environment is rebuilt only when the dependency files (or this script) change.
key=$(cat pyproject.toml constraints/cpu.txt scripts/test.sh | sha256sum | cut -c1-16)
venv="${GAFKIT_CACHE:-$HOME/.cache/gafkit}/venv-test-$key"
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  # cluster: Ray, so the Ray executor's test runs against a local CPU instance instead of being skipped.
  "$venv/bin/python" -m pip install -q -c constraints/cpu.txt -e ".[dev,cluster]"
  touch "$venv/.complete"
fi
# Re-point the editable install at this checkout (the cached venv may come from another clone).
"$venv/bin/python" -m pip install -q --no-deps -e . >/dev/null
"$venv/bin/ruff" check .
set +e
"$venv/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
