"""An executed notebook as a small HTML page that opens offline.

A report must open without a network and without a kernel, and scheduled runs must not fill
a disk: plotly.js (about 4.7 MB) is written once per reports folder
(``plotly-<version>.min.js``) and every page loads it by a relative path, so a page holds
only its own figures' data. Figures are taken from plotly's own output mimetype
(``PLOTLY_RENDERER=plotly_mimetype``, set for the kernel by ``workbench report``) and drawn
with ``Plotly.newPlot``.

Widgets cannot run without a kernel, so a page shows each widget's text form (a tqdm bar's
last state, for example) and carries no widget state and no widget manager.

>>> "<\\\\/script>" in _script_json({"text": "</script>"})
True
"""

from __future__ import annotations

import copy
import html
import json
import logging
import os
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter

log = logging.getLogger(__name__)

PLOTLY = "application/vnd.plotly.v1+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def shared_plotly(root: Path) -> Path:
    """``root/plotly-<version>.min.js``, written from the installed plotly if missing."""
    import plotly
    from plotly.offline import get_plotlyjs

    path = root / f"plotly-{plotly.__version__}.min.js"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(get_plotlyjs(), encoding="utf-8")
        partial.replace(path)  # a page never loads half a library
        log.info("wrote %s, shared by every report in %s", path.name, root)
    return path


def render(executed: nbformat.NotebookNode, page: Path, keep_code: bool, plotly_js: Path) -> None:
    """Write ``executed`` as HTML to ``page``; figures load ``plotly_js`` by a relative path."""
    nb = _static(executed)
    exporter = HTMLExporter(exclude_input=not keep_code, exclude_input_prompt=not keep_code)
    body, _ = exporter.from_notebook_node(nb)
    src = html.escape(Path(os.path.relpath(plotly_js.resolve(), page.parent.resolve())).as_posix())
    # before require.js: plotly.js registers as an AMD module, not as window.Plotly, once
    # require.js is on the page
    tag = f'<script src="{src}" charset="utf-8"></script>'
    head = body.find("<head>")
    body = body[: head + 6] + tag + body[head + 6 :] if head >= 0 else tag + body
    page.write_text(body, encoding="utf-8")


def _static(executed: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the notebook with figures as HTML and widgets as their text."""
    nb = copy.deepcopy(executed)
    nb.metadata.pop("widgets", None)
    figure = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data")
            if not data:
                continue
            if PLOTLY in data:
                figure += 1
                output["data"] = {"text/html": _figure_html(data[PLOTLY], f"figure-{figure}")}
            elif WIDGET_VIEW in data:
                text = data.get("text/plain", "")
                output["data"] = {"text/plain": text} if text else {}
    return nb


def _figure_html(fig: dict[str, Any], div_id: str) -> str:
    layout = fig.get("layout", {})
    height = layout.get("height") or 450
    config = {"responsive": True, **fig.get("config", {})}
    return (
        f'<div id="{div_id}" class="plotly-graph-div" style="height:{int(height)}px;'
        f'width:100%"></div><script>Plotly.newPlot("{div_id}", '
        f"{_script_json(fig.get('data', []))}, {_script_json(layout)}, "
        f"{_script_json(config)});</script>"
    )


def _script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")
