"""Headless notebook runs: execute a notebook with papermill, render it to HTML, index it.

``workbench report NAME [-p name value ...]`` runs ``notebooks/NAME`` into
``reports/<date>/<notebook>-<run id>.ipynb`` and ``.html`` (code hidden unless asked), writes
the results the notebook recorded (:func:`workbench.lab.record`) to ``.json`` beside them,
and keeps ``reports/index.html`` listing every report. A cell that fails stops the run with
one line naming the cell and the error; the executed notebook is still written, so the
traceback can be read in it.

The kernel runs with ``WORKBENCH_HEADLESS=1`` in its environment: notebooks with widgets
(the live control panel) then run their experiment to the end with the parameters given,
instead of waiting for a click that no one will make.

A parameter's comment in the ``parameters`` cell may end with its documented range, which
``--list`` shows and a value outside is refused for, before anything runs:

* ``machines = 5  # how many machines [1 .. 200]``: a number from 1 to 200, inclusive;
* ``centre = "moving"  # the centre line [moving | fixed]``: one of the values listed.

>>> coerce("machines", "12", "5"), coerce("rate_hz", "2", "1.0"), coerce("stop", "no", "True")
(12, 2.0, False)
>>> domain("how many machines [1 .. 200]")
('how many machines', 1, 200, None)
>>> domain('the centre line [moving | fixed]')
('the centre line', None, None, ('moving', 'fixed'))
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError

from workbench.config import project_root
from workbench.errors import ConfigError, WorkbenchError
from workbench.lab.index import write_index
from workbench.lab.render import render, shared_plotly
from workbench.lab.results import recorded
from workbench.runs import new_run_id

log = logging.getLogger(__name__)


#: the kernel's own log at ERROR: it warns, at every start, that a local kernel's sockets are
#: not encrypted (they listen on 127.0.0.1 only), which a report's reader cannot act on
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


class ReportFailed(WorkbenchError):
    """A notebook cell raised; the message names the cell and the error."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of a notebook's ``parameters`` cell, with its documented range."""

    name: str
    default: Any
    help: str = ""
    #: inclusive bounds of a number (``[LO .. HI]`` in the comment); None: unbounded
    low: float | None = None
    high: float | None = None
    #: the values a string may take (``[a | b]`` in the comment); None: any
    choices: tuple[str, ...] | None = None

    def check(self, value: Any) -> Any:
        """``value`` if it lies in the documented range, else a ConfigError naming it."""
        if self.choices is not None and value not in self.choices:
            raise ConfigError(self.name, str(value), "one of: " + ", ".join(self.choices))
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and (
            (self.low is not None and value < self.low)
            or (self.high is not None and value > self.high)
        ):
            raise ConfigError(self.name, str(value), self._bounds())
        return value

    def _bounds(self) -> str:
        if self.low is None:
            return f"a number of at most {self.high}"
        if self.high is None:
            return f"a number of at least {self.low}"
        return f"a number from {self.low} to {self.high}"

    def to_dict(self) -> dict[str, Any]:
        bounds = None if self.low is None and self.high is None else [self.low, self.high]
        return {"default": self.default, "help": self.help, "range": bounds,
                "choices": list(self.choices) if self.choices else None}  # fmt: skip


_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"\[\s*({_NUMBER})?\s*\.\.\s*({_NUMBER})?\s*\]\s*$")
_CHOICES = re.compile(r"\[([^\[\]|]+(?:\|[^\[\]|]+)+)\]\s*$")


def domain(text: str) -> tuple[str, float | None, float | None, tuple[str, ...] | None]:
    """A parameter comment split into its help text and its documented range, if any:
    ``(help, low, high, choices)``. Either bound of ``[LO .. HI]`` may be left out."""
    if m := _RANGE.search(text):
        low, high = (None if g is None else _literal(g) for g in m.groups())
        return text[: m.start()].rstrip(), low, high, None
    if m := _CHOICES.search(text):
        choices = tuple(c.strip().strip("\"'") for c in m.group(1).split("|"))
        return text[: m.start()].rstrip(), None, None, choices
    return text, None, None, None


@dataclass(frozen=True)
class Notebook:
    name: str  # the file's stem, e.g. 01_quickstart
    path: Path
    parameters: dict[str, Parameter] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path),
                "parameters": {p.name: p.to_dict() for p in self.parameters.values()}}  # fmt: skip


@dataclass(frozen=True)
class Report:
    notebook: str
    run_id: str
    executed: Path
    html: Path
    results: Path
    parameters: dict[str, Any]
    seconds: float
    #: what the notebook recorded with ``workbench.lab.record``
    recorded: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"notebook": self.notebook, "run_id": self.run_id, "executed": str(self.executed),
                "html": str(self.html), "results": str(self.results),
                "parameters": self.parameters, "seconds": round(self.seconds, 1),
                "recorded": self.recorded}  # fmt: skip


def notebooks_dir(folder: Path | None = None) -> Path:
    """``folder`` (``--notebooks DIR``: a folder of your own notebooks), else the project's."""
    path = folder or project_root() / "notebooks"
    if not path.is_dir():
        raise ConfigError("notebooks", str(path), "a folder of .ipynb files")
    return path


def inspect(path: Path) -> Notebook:
    """A notebook and the parameters of its ``parameters`` cell, with their defaults."""
    try:
        found = papermill.inspect_notebook(str(path))
    except ValueError as exc:  # no kernelspec, unreadable parameters cell
        raise ConfigError("notebook", str(path), f"a runnable notebook ({exc})") from None
    params = {
        name: Parameter(name, _literal(p["default"]), *domain(p.get("help") or ""))
        for name, p in found.items()
    }
    return Notebook(path.stem, path, params)


def list_notebooks(folder: Path | None = None) -> list[Notebook]:
    return [inspect(p) for p in sorted(notebooks_dir(folder).glob("*.ipynb"))]


def find(name: str, folder: Path | None = None) -> Path:
    """``01_quickstart``, ``quickstart``, ``01`` or a path to an .ipynb file."""
    path = Path(name)
    if path.suffix == ".ipynb":
        if not path.is_file():
            raise ConfigError("notebook", name, "an existing .ipynb file")
        return path.resolve()
    candidates = sorted(notebooks_dir(folder).glob("*.ipynb"))
    for p in candidates:
        if name in (p.stem, p.stem.split("_", 1)[-1], p.stem.split("_", 1)[0]):
            return p
    known = ", ".join(p.stem for p in candidates)
    raise ConfigError("notebook", name, f"one of: {known}, or a path to an .ipynb file")


def coerce(name: str, value: str, default: Any) -> Any:
    """A command-line value as the type of the parameter's default."""
    if isinstance(default, bool) or (isinstance(default, str) and default in ("True", "False")):
        text = value.strip().lower()
        if text not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
            raise ConfigError(name, value, "true or false")
        return text in {"1", "true", "yes", "on"}
    if isinstance(default, str):
        default = _literal(default)
    try:
        if isinstance(default, int) and not isinstance(default, bool):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise ConfigError(name, value, kind) from None
    if isinstance(default, list | dict | tuple) or default is None:
        return _literal(value)
    return value


def run(
    name: str,
    values: dict[str, str] | None = None,
    out_dir: Path | None = None,
    keep_code: bool = False,
    run_id: str | None = None,
    progress: bool = False,
    folder: Path | None = None,
) -> Report:
    """Execute one notebook headless; write the executed notebook, its HTML, its recorded
    results and the index. ``folder``: where to look ``name`` up (default notebooks/)."""
    nb = inspect(find(name, folder))
    values = values or {}
    unknown = sorted(set(values) - set(nb.parameters))
    if unknown:
        raise ConfigError(
            "parameter", ", ".join(unknown),
            f"parameters of {nb.name}: {', '.join(nb.parameters) or 'none'}",
        )  # fmt: skip
    params = {
        k: nb.parameters[k].check(coerce(k, v, nb.parameters[k].default)) for k, v in values.items()
    }
    run_id = run_id or new_run_id()
    root = out_dir or project_root() / "reports"
    folder = root / dt.date.today().isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    plotly_js = shared_plotly(root)
    executed = folder / f"{nb.name}-{run_id}.ipynb"
    started = dt.datetime.now(dt.UTC)
    failure: PapermillExecutionError | None = None
    # Figures as plotly's JSON mimetype only: the HTML draws them with the reports folder's
    # one copy of plotly.js (workbench.lab.render), and the .ipynb stays small too.
    os.environ["PLOTLY_RENDERER"] = "plotly_mimetype"
    os.environ["WORKBENCH_HEADLESS"] = "1"
    source = nbformat.read(nb.path, as_version=4)
    cells = sum(c.cell_type == "code" for c in source.cells)
    log.info("running %s (%d cells) into %s", nb.name, cells, executed)
    try:
        papermill.execute_notebook(
            str(nb.path), str(executed), parameters=params, cwd=str(nb.path.parent),
            progress_bar=progress, log_output=False, kernel_name=_kernel(source),
            extra_arguments=KERNEL_ARGUMENTS,
        )  # fmt: skip
    except PapermillExecutionError as exc:
        failure = exc
    seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    done = nbformat.read(executed, as_version=4)
    found = recorded(done)
    # a notebook that ran an experiment recorded its run id: the report takes it, so the
    # file names, the report and the database rows all carry the same id
    if isinstance(found.get("run_id"), str) and found["run_id"] != run_id:
        run_id = found["run_id"]
        executed = executed.replace(folder / f"{nb.name}-{run_id}.ipynb")
    page = executed.with_suffix(".html")
    render(done, page, keep_code, plotly_js)
    error = None
    if failure is not None:
        where = f"cell {failure.cell_index}" + (
            f" (execution count {failure.exec_count})" if failure.exec_count else ""
        )
        error = f"notebook {nb.name} failed in {where}: {failure.ename}: {failure.evalue}"
    defaults = {name: p.default for name, p in nb.parameters.items()}
    results = executed.with_suffix(".json")
    results.write_text(json.dumps({
        "notebook": nb.name, "run_id": run_id, "parameters": params,
        "effective": defaults | params,
        "changed": {k: v for k, v in params.items() if v != defaults.get(k)},
        "status": "failed" if failure else "completed", "error": error,
        "started": started.isoformat(timespec="seconds"), "seconds": round(seconds, 1),
        "results": found,
    }, indent=2, default=str) + "\n")  # fmt: skip
    write_index(root)
    if error is not None:
        raise ReportFailed(f"{error}; the executed notebook is {executed}")
    log.info("report %s written in %.1fs", page, seconds)
    return Report(nb.name, run_id, executed, page, results, params, seconds, found)


def _kernel(source: nbformat.NotebookNode) -> str:
    """The notebook's kernel, or this Python's (a notebook written by a tool may name none)."""
    spec = source.metadata.get("kernelspec") or {}
    return spec.get("name") or "python3"


def _literal(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
