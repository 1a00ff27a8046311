#!/usr/bin/env bash
# Set up, then run the main job: embedded stack, a small simulated factory, processed into
# PostgreSQL, and a summary. Extra arguments go to `workbench run` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/workbench run "$@"
