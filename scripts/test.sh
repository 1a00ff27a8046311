#!/usr/bin/env bash
# Set up, then lint and run the whole test suite (it starts and stops its own broker and
# database). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# two processes: the slow lane (servers, whole runs) waits on I/O; 2 cores keep it near 9 min
exec .venv/bin/python -m pytest -n 2 "$@"
