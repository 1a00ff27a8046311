"""Key results a notebook records, machine-readable, in its own outputs.

``record(name, value)`` displays one output carrying the value as JSON under a mimetype of
its own (the way scrapbook's ``glue`` does), with a one-line text rendering for people.
``workbench report`` collects them into ``<report>.json`` next to the executed notebook,
and tests read them back with :func:`recorded`, so a headless run is checked by what it
found, not by whether it ran.

>>> import json
>>> bundle = _bundle("precision", {"spike": 1.0})
>>> json.loads(json.dumps(bundle[MIMETYPE]))
{'name': 'precision', 'value': {'spike': 1.0}}
>>> bundle["text/plain"]
'precision: {"spike": 1.0}'
>>> _plain({"rate": 0.009500000000000001, "big": 123456789.25, "nan": float("nan")})
{'rate': 0.0095, 'big': 123456800.0, 'nan': None}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MIMETYPE = "application/vnd.workbench.result+json"


def record(name: str, value: Any) -> None:
    """Record ``value`` (anything JSON can hold) as the notebook's result ``name``."""
    from IPython.display import display  # only a notebook needs IPython

    display(_bundle(name, value), raw=True)


def _bundle(name: str, value: Any) -> dict[str, Any]:
    value = _plain(value)
    return {MIMETYPE: {"name": name, "value": value},
            "text/plain": f"{name}: {json.dumps(value)}"}  # fmt: skip


def _plain(value: Any) -> Any:
    """numpy and pandas scalars as Python ones; NaN and infinities as None (JSON has none)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        # 0.1 + 0.2 is recorded as 0.3: seven significant digits are more than any figure
        # a notebook measures, and a reader should not see float noise
        return float(f"{value:.7g}") if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def recorded(notebook: str | Path | Any) -> dict[str, Any]:
    """Every result an executed notebook recorded, by name (a later one wins).

    ``notebook``: a path to an executed .ipynb, or a notebook node already read.
    """
    import nbformat

    nb = notebook
    if isinstance(notebook, str | Path):
        nb = nbformat.read(notebook, as_version=4)
    found: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get(MIMETYPE)
            if data is not None:
                found[data["name"]] = data["value"]
    return found
