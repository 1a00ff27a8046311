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

import os
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: False when ``WORKBENCH_JIT=0``: kernels then run as plain Python.
JIT = os.environ.get("WORKBENCH_JIT", "1").strip().lower() not in {"0", "false", "no", "off"}


def kernel(fn: F) -> F:
    """Compile ``fn`` with numba (nopython, cached, no Python objects), or leave it as is
    when the JIT is off."""
    if not JIT:
        return fn
    import numba

    # numba caches beside the source file; a function typed into a shell has none
    cache = os.path.isfile(fn.__code__.co_filename)
    return numba.njit(cache=cache, nogil=True)(fn)
