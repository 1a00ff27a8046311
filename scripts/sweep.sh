#!/usr/bin/env bash
# The full notebook sweep: every notebook at the high corner of its documented parameter
# ranges, every choice value on its own, every shared data file whole for notebook 06, on
# top of the cheap corners the test suite runs. Takes about half an hour on 2 cores; run it
# before a release or after changing a notebook's ranges. Extra arguments go to pytest
# (e.g. -k 06 for notebook 06 only).
set -euo pipefail
cd "$(dirname "$0")/.."
# its own --basetemp: a pytest run elsewhere on the machine removes old pytest-of-* folders,
# the session stack's database included, which would end a half-hour sweep midway
WORKBENCH_SWEEP=1 exec .venv/bin/python -m pytest -p no:cacheprovider --durations=0 --timeout 1800 \
    --basetemp "${TMPDIR:-/tmp}/workbench-sweep" \
    tests/test_notebook_sweep.py "$@"
