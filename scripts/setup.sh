#!/usr/bin/env bash
# Set up the project: a virtual environment in .venv with the package and its dev tools.
# Idempotent and quick when nothing changed (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.workbench-installed
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing the workbench and its dependencies into .venv (a few minutes the first time)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi
# The Compose specification's JSON schema, for tests/test_compose.py: it ships inside the
# docker-compose 1.x wheel, which is downloaded (not installed: it pins PyYAML < 6).
schemas=.venv/share/workbench-dev
if ! ls "$schemas"/docker_compose-*.whl >/dev/null 2>&1; then
  .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps \
    --dest "$schemas" 'docker-compose==1.29.2'
fi
# The processor's kernels compiled ahead of time (no numba or LLVM in a processor: ~120 MB
# less), rebuilt when the processor's sources change; without a C compiler the processor
# compiles with numba at run time instead.
.venv/bin/python -m workbench.processor.aot --if-stale || true
