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

>>> coerce("machines", "12", "5"), coerce("rate_hz", "2", "1.0"), coerce("stop", "no", "True")
(12, 2.0, False)
"""

from __future__ import annotations

import ast
import datetime as dt
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from workbench.config import project_root
from workbench.errors import ConfigError, WorkbenchError
from workbench.lab.results import recorded
from workbench.runs import new_run_id

log = logging.getLogger(__name__)


class ReportFailed(WorkbenchError):
    """A notebook cell raised; the message names the cell and the error."""


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    help: str = ""


@dataclass(frozen=True)
class Notebook:
    name: str  # the file's stem, e.g. 01_quickstart
    path: Path
    parameters: dict[str, Parameter] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path),
                "parameters": {p.name: {"default": p.default, "help": p.help}
                               for p in self.parameters.values()}}  # fmt: skip


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
        name: Parameter(name, _literal(p["default"]), p.get("help") or "")
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
    params = {k: coerce(k, v, nb.parameters[k].default) for k, v in values.items()}
    run_id = run_id or new_run_id()
    root = out_dir or project_root() / "reports"
    folder = root / dt.date.today().isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    executed = folder / f"{nb.name}-{run_id}.ipynb"
    started = dt.datetime.now(dt.UTC)
    failure: PapermillExecutionError | None = None
    # Static figures for the HTML: plotly.js embedded once per notebook (a report must open
    # offline), plus plotly's own mimetype for a live front end opening the .ipynb.
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook")
    os.environ["WORKBENCH_HEADLESS"] = "1"
    source = nbformat.read(nb.path, as_version=4)
    cells = sum(c.cell_type == "code" for c in source.cells)
    log.info("running %s (%d cells) into %s", nb.name, cells, executed)
    try:
        papermill.execute_notebook(
            str(nb.path), str(executed), parameters=params, cwd=str(nb.path.parent),
            progress_bar=progress, log_output=False, kernel_name=_kernel(source),
        )  # fmt: skip
    except PapermillExecutionError as exc:
        failure = exc
    seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    page = executed.with_suffix(".html")
    done = nbformat.read(executed, as_version=4)
    _render(done, page, keep_code)
    found = recorded(done)
    results = executed.with_suffix(".json")
    results.write_text(json.dumps({
        "notebook": nb.name, "run_id": run_id, "parameters": params,
        "status": "failed" if failure else "completed", "seconds": round(seconds, 1),
        "results": found,
    }, indent=2) + "\n")  # fmt: skip
    write_index(root)
    if failure is not None:
        where = f"cell {failure.cell_index}" + (
            f" (execution count {failure.exec_count})" if failure.exec_count else ""
        )
        raise ReportFailed(
            f"notebook {nb.name} failed in {where}: {failure.ename}: {failure.evalue}; "
            f"the executed notebook is {executed}"
        )
    log.info("report %s written in %.1fs", page, seconds)
    return Report(nb.name, run_id, executed, page, results, params, seconds, found)


def _kernel(source: nbformat.NotebookNode) -> str:
    """The notebook's kernel, or this Python's (a notebook written by a tool may name none)."""
    spec = source.metadata.get("kernelspec") or {}
    return spec.get("name") or "python3"


def _render(executed: nbformat.NotebookNode, page: Path, keep_code: bool) -> None:
    exporter = HTMLExporter(exclude_input=not keep_code, exclude_input_prompt=not keep_code)
    body, _ = exporter.from_notebook_node(executed)
    page.write_text(body)


def write_index(root: Path) -> Path:
    """``index.html``: every report under ``root``, newest first."""
    pages = sorted(root.glob("*/*.html"), key=lambda p: p.stat().st_mtime, reverse=True)
    items = "\n".join(
        f'<li><a href="{html.escape(str(p.relative_to(root)))}">'
        f"{html.escape(p.parent.name)} {html.escape(p.stem)}</a></li>"
        for p in pages
    )
    index = root / "index.html"
    index.write_text(
        "<!doctype html><meta charset=utf-8><title>workbench reports</title>"
        f"<h1>workbench reports</h1><ul>\n{items}\n</ul>\n"
    )
    return index


def _literal(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
