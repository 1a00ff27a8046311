"""The ahead-of-time build of the kernels (processor/aot.py, processor/kernels.py): the same
results as numba's JIT on a whole stream, every kernel the processor calls from Python in
it, no numba in the process, a stale build never used, arguments checked at each call."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from workbench.processor import aot, kernels

#: One stream through every step; prints the mode, whether numba was loaded, how many
#: kernels ran as Python, and a digest of everything the steps gave out.
PIPELINE = """
import hashlib, sys
import numpy as np
from workbench.processor import kernels, steps
from workbench.processor.decode import MachineTable
from workbench.processor.intake import Intake
from workbench.processor.rules import load_rules
from workbench.processor.state import EngineConfig, PartitionState
from workbench.processor.warmup import _feed
from workbench.processor.windows import WindowConfig
from workbench.simulator.control import ChaosControl
from workbench.simulator.source import Simulation
from workbench.simulator.spec import SimulationSpec

spec = SimulationSpec.build(scenario="standard", duration_s=400)
sim = Simulation(spec.factory, "aot", ChaosControl(spec.chaos), spec.scripted(), spec.magnitudes)
msgs = []
sim.run(lambda k, v: msgs.append((k, v)), 400)
rules = load_rules()
machines = MachineTable()
intake = Intake(machines, rules.validation, "raw")
state = PartitionState(EngineConfig(WindowConfig(idle_timeout_s=None)), rules, machines)
digest = hashlib.sha256()
outputs = []
process = steps.process
steps.process = lambda *a: outputs.append(process(*a)) or outputs[-1]
for i in range(0, len(msgs), 2000):
    _feed(intake, state, msgs[i:i + 2000], i, control=False, wall_s=0.0)
    outputs.append(steps.due(state, 0.0, provisional=True, idle_since=None, idle_timeout_s=None))
    steps.forget_dropped(state)
_feed(intake, state, [(b"", b"")], len(msgs), control=True, wall_s=0.0)
n = 0
for out in outputs:
    for part in (out.readings, out.windows, out.provisional, out.sensor_stats):
        for cols in part:
            for name in sorted(cols or {}):
                a = np.asarray(cols[name])
                n += a.size
                raw = repr(a.tolist()).encode() if a.dtype == object else a.tobytes()
                digest.update(name.encode() + raw)
    digest.update(repr(out.alerts).encode())
print(kernels.MODE, "numba" in sys.modules, kernels._Interpreted.calls, n, digest.hexdigest())
"""


def run_pipeline(aot_on: bool) -> list[str]:
    env = os.environ | {"WORKBENCH_AOT": "1" if aot_on else "0", "WORKBENCH_JIT": "1"}
    done = subprocess.run([sys.executable, "-c", PIPELINE], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def current_build() -> bool:
    if aot.load() is not None:
        return True
    if os.environ.get("CI"):  # scripts/setup.sh builds it: in CI a missing build is a failure
        pytest.fail("no current ahead-of-time build (scripts/setup.sh should have made one)")
    pytest.skip("no current ahead-of-time build: python -m workbench.processor.aot")
    return False


def test_the_build_gives_what_the_jit_gives_on_a_whole_stream():
    current_build()
    mode, numba_loaded, interpreted, values, digest = run_pipeline(aot_on=True)
    assert mode == "aot" and numba_loaded == "False", "the processor ran without numba"
    assert interpreted == "0", "every kernel called from Python is in the build"
    jit = run_pipeline(aot_on=False)
    assert jit[0] == "jit" and jit[1] == "True"
    assert int(values) > 100_000
    assert (values, digest) == (jit[3], jit[4])


def test_a_stale_build_is_not_used(tmp_path, monkeypatch):
    sidecar = tmp_path / "_aot.json"
    sidecar.write_text(json.dumps({"fingerprint": "0" * 64, "exports": {}}))
    monkeypatch.setattr(aot, "SIDECAR", sidecar)
    assert aot.load() is None
    monkeypatch.setattr(aot, "SIDECAR", tmp_path / "missing.json")
    assert aot.load() is None


def test_the_fingerprint_follows_the_sources(tmp_path, monkeypatch):
    (tmp_path / "stats").mkdir()
    (tmp_path / "windows.py").write_text("x = 1\n")
    monkeypatch.setattr(aot, "HERE", tmp_path)
    before = aot.fingerprint()
    (tmp_path / "windows.py").write_text("x = 2\n")
    assert aot.fingerprint() != before


def test_a_compiled_kernel_refuses_arguments_it_was_not_built_for():
    calls = []

    def py(a, b, k):
        return None

    specs = [{"array": "<f8", "ndim": 1, "layout": "C"},
             {"array": [["key", "<i8"], ["x", "<f8", [2]]], "ndim": 1, "layout": "C"},
             {"scalar": "int64"}]  # fmt: skip
    k = kernels._Compiled(py, lambda *a: calls.append(a) or 7, specs)
    rec = np.zeros(3, [("key", "<i8"), ("x", "<f8", (2,))])
    assert k(np.zeros(4), rec, 1) == 7 and len(calls) == 1
    with pytest.raises(TypeError, match=r"kernel .*py: argument 0 is float64 of 1 dimensions"):
        k(np.zeros(8)[::2], rec, 1)  # not contiguous: the build would misread it
    with pytest.raises(TypeError, match="argument 0 is int64"):
        k(np.zeros(4, np.int64), rec, 1)
    with pytest.raises(TypeError, match="argument 1"):
        k(np.zeros(4), np.zeros(3), 1)
    assert len(calls) == 1 and k.py_func is py
