"""The one place that compiles the processor's kernels.

A kernel is a plain loop over batch columns with its running state in arrays indexed by a
dense key id (see :mod:`workbench.processor.keys`). :func:`kernel` compiles such a loop
with numba (``nopython``, cached on disk next to the module, so a process pays the compile
once per machine, not once per start). With ``WORKBENCH_JIT=0`` in the environment the
same functions run as plain Python: slow, but steppable in a debugger and a second,
independent check that the compiled code does what the Python says.

>>> import numpy as np
>>> @kernel
... def running_sum(keys, values, totals):
...     for i in range(keys.size):
...         totals[keys[i]] += values[i]
>>> totals = np.zeros(2)
>>> running_sum(np.array([0, 1, 0]), np.array([1.0, 2.0, 3.0]), totals)
>>> totals.tolist()
[4.0, 2.0]
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable)
log = logging.getLogger(__name__)


def _flag(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in {"0", "false", "no", "off"}


#: False when ``WORKBENCH_JIT=0``: kernels then run as plain Python.
JIT = _flag("WORKBENCH_JIT")
#: The ahead-of-time build (:mod:`workbench.processor.aot`), when there is a current one and
#: ``WORKBENCH_AOT`` is not 0; else None and numba compiles at run time.
_AOT = None
if JIT and _flag("WORKBENCH_AOT"):
    from workbench.processor import aot as _aot_build

    _AOT = _aot_build.load()
#: How kernels run: "aot" (the ahead-of-time build), "jit" (numba) or "python".
MODE = "python" if not JIT else ("aot" if _AOT is not None else "jit")


def kernel(fn: F) -> F:
    """Compile ``fn`` with numba (nopython, cached, no Python objects), take it from the
    ahead-of-time build, or leave it as is when the JIT is off."""
    if MODE == "python":
        return fn
    if MODE == "aot":
        module, exports = _AOT  # type: ignore[misc]
        entry = exports.get(f"{fn.__module__}:{fn.__name__}")
        if entry is None:  # called only from other kernels: compiled into them
            return _Interpreted(fn)  # type: ignore[return-value]
        return _Compiled(fn, getattr(module, entry["export"]), entry["args"])  # type: ignore[return-value]
    import numba

    # numba caches beside the source file; a function typed into a shell has none
    cache = os.path.isfile(fn.__code__.co_filename)
    return numba.njit(cache=cache, nogil=True)(fn)


class _Compiled:
    """A kernel from the ahead-of-time build. Such a function does not dispatch on types
    (an array of another dtype or layout would be misread), so each call checks its
    arguments against the ones the build was made for: a mismatch is a bug, and says so."""

    def __init__(self, fn: Callable, compiled: Callable, specs: list[dict]) -> None:
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self._compiled = compiled
        self._arrays = [
            (i, np.dtype(np.lib.format.descr_to_dtype(_descr(s["array"]))), s["ndim"], s["layout"])
            for i, s in enumerate(specs)
            if "array" in s
        ]

    def __call__(self, *args: Any) -> Any:
        for i, dtype, ndim, layout in self._arrays:
            a = args[i]
            if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.ndim == ndim
                    and (layout != "C" or a.flags.c_contiguous)):  # fmt: skip
                raise TypeError(
                    f"kernel {self.py_func.__qualname__}: argument {i} is "
                    f"{getattr(a, 'dtype', type(a).__name__)} of "
                    f"{getattr(a, 'ndim', '?')} dimensions, the ahead-of-time build takes "
                    f"{dtype} of {ndim} ({layout} layout)"
                )
        return self._compiled(*args)


class _Interpreted:
    """A kernel the ahead-of-time build does not export (its callers have it compiled in).
    Called from Python it runs as Python, correct but slow: said once in the log."""

    calls = 0

    def __init__(self, fn: Callable) -> None:
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self._warned = False

    def __call__(self, *args: Any) -> Any:
        _Interpreted.calls += 1
        if not self._warned:
            self._warned = True
            log.warning("kernel %s is not in the ahead-of-time build: running it as Python",
                        self.py_func.__qualname__)  # fmt: skip
        return self.py_func(*args)


def _descr(descr: Any) -> Any:
    """A dtype description read back from JSON (lists where numpy wants tuples)."""
    if isinstance(descr, str):
        return descr
    return [(f[0], _descr(f[1]), *([tuple(f[2])] if len(f) > 2 else [])) for f in descr]
