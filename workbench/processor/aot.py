"""The processor's kernels compiled ahead of time: one extension module, no compiler at run
time.

numba compiles a kernel when it is first called, and even a kernel loaded from numba's disk
cache needs numba and LLVM in the process: ~120 MB resident before the first reading, the
largest part of a processor's fixed memory. ``python -m workbench.processor.aot`` (run by
``scripts/setup.sh``) compiles the kernels the processor calls from Python, with the
argument types a warm-up run gives them, into ``workbench/processor/_aot*.so`` with
``numba.pycc``, and writes beside it ``_aot.json``: the exports, their argument types, and a
fingerprint of the processor's sources and of the numba, numpy and Python versions.

:func:`load` hands the module to :mod:`workbench.processor.kernels` only when the
fingerprint still matches, so an edited kernel is never run from a stale build: without a
current build the processor compiles with numba as before (a log line says which).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
MODULE = "_aot"
SIDECAR = HERE / f"{MODULE}.json"
#: Modules whose kernels the processor calls from Python (their callees are compiled in).
KERNEL_MODULES = (
    "workbench.processor.decode",
    "workbench.processor.dedup",
    "workbench.processor.hysteresis",
    "workbench.processor.rolling",
    "workbench.processor.watermark",
    "workbench.processor.windows",
    "workbench.processor.stats.sensor",
    "workbench.processor.stats.machine",
)


def fingerprint() -> str | None:
    """A digest of every source file of the processor's engine and of the versions the
    build depends on (any change means a new build); None without numba."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy

    try:
        numba_version = version("numba")
    except PackageNotFoundError:
        return None
    h = hashlib.sha256()
    for path in sorted([*HERE.glob("*.py"), *(HERE / "stats").glob("*.py")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(f"{numba_version} {numpy.__version__} {platform.python_version()}".encode())
    h.update(platform.machine().encode() + _cpu_model().encode())
    return h.hexdigest()


def _cpu_model() -> str:
    """What the build's machine code was made for (it is built for this CPU)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return hashlib.sha256(flags.encode()).hexdigest()


def load() -> tuple[Any, dict[str, dict]] | None:
    """The compiled module and its exports (``"module:function"`` -> export name and
    argument specs), or None when there is no build or it does not match the sources."""
    if not SIDECAR.is_file():
        return None
    try:
        meta = json.loads(SIDECAR.read_text())
        if meta.get("fingerprint") != fingerprint():
            log.info("kernels: the ahead-of-time build is stale; compiling with numba instead "
                     "(rebuild: python -m workbench.processor.aot)")  # fmt: skip
            return None
        module = importlib.import_module(f"workbench.processor.{MODULE}")
    except (OSError, ValueError, ImportError) as exc:
        log.info("kernels: no usable ahead-of-time build (%s); compiling with numba", exc)
        return None
    return module, meta["exports"]


def _spec(numba_type: Any) -> dict:
    """What a call must pass for one argument (checked at each call: a compiled function
    does not dispatch on types)."""
    from numba.core import types
    from numba.np.numpy_support import as_dtype

    if isinstance(numba_type, types.Array):
        import numpy as np

        dtype = np.dtype(as_dtype(numba_type.dtype))
        return {"array": np.lib.format.dtype_to_descr(dtype), "ndim": numba_type.ndim,
                "layout": numba_type.layout}  # fmt: skip
    return {"scalar": str(numba_type)}


def _build() -> None:
    """In a process of its own with the JIT on: warm up, then compile every entry kernel
    with the signatures it was called with."""
    import warnings

    from numba.core.registry import CPUDispatcher

    warnings.filterwarnings("ignore", module="numba")  # pycc is marked pending deprecation
    import numba.pycc.compiler
    from numba.pycc import CC

    class ReleasingGil(numba.pycc.compiler.Flags):
        """pycc's flags, with the GIL released while a kernel runs, as the JIT's ``nogil``:
        the writer threads go on meanwhile."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.release_gil = True

    numba.pycc.compiler.Flags = ReleasingGil  # type: ignore[misc]

    from workbench.processor.rules import load_rules
    from workbench.processor.state import EngineConfig
    from workbench.processor.warmup import warm_up
    from workbench.processor.windows import WindowConfig

    rules = load_rules()
    warm_up(EngineConfig(WindowConfig()), rules, rules.validation)
    cc = CC(MODULE)
    cc.output_dir = str(HERE)
    cc.target_cpu = "host"  # built where it runs, like the JIT (the fingerprint has the CPU)
    exports: dict[str, dict] = {}
    for name in KERNEL_MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if not (isinstance(value, CPUDispatcher) and value.__module__ == name):
                continue
            if len(value.signatures) != 1:  # called from Python with one signature, or never
                continue
            (sig,) = value.signatures
            signature = value.overloads[sig].signature
            export = f"{name.rsplit('.', 1)[-1]}__{attr}"
            cc.export(export, signature)(value.py_func)
            exports[f"{name}:{attr}"] = {"export": export,
                                         "args": [_spec(t) for t in signature.args]}  # fmt: skip
    cc.compile()
    SIDECAR.write_text(json.dumps({"fingerprint": fingerprint(), "exports": exports}, indent=1))
    print(f"compiled {len(exports)} kernels into {MODULE} ({HERE})")


def main(argv: list[str] | None = None) -> int:
    """Build in a child process (the kernels must be numba's there, not this build's);
    ``--if-stale`` builds only when there is no current build."""
    if "--if-stale" in (sys.argv[1:] if argv is None else argv) and load() is not None:
        print(f"aot: the ahead-of-time build is current ({HERE / MODULE})")
        return 0
    env = os.environ | {"WORKBENCH_AOT": "0", "WORKBENCH_JIT": "1"}
    code = "from workbench.processor.aot import _build; _build()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"aot: no ahead-of-time build ({last}); the processor compiles with numba",
              file=sys.stderr)  # fmt: skip
        return 1
    print(done.stdout.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
