"""The Grafana provisioning files and dashboard JSON of the repository, as data.

Why: ``workbench grafana check`` and the tests need every query a dashboard sends to the
database (panel targets, annotation queries, template-variable queries) without a
Grafana server; this module finds them and says what shape each panel expects. Panels of
the Prometheus data source are listed apart (:attr:`Dashboard.promql`): their queries go to
Prometheus, not to the database.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.config import project_root

log = logging.getLogger(__name__)

#: the PostgreSQL data source type of Grafana 10.3+ (formerly "postgres")
POSTGRES_TYPES = ("grafana-postgresql-datasource", "postgres")
PROMETHEUS_TYPE = "prometheus"
#: the panel types whose queries ``check`` understands, and what each needs
SHAPES = {"timeseries": "time series", "barchart": "table", "gauge": "value", "stat": "value",
          "bargauge": "value", "table": "table"}  # fmt: skip


def grafana_dir() -> Path:
    """The repository's ``grafana/`` folder (provisioning/ and dashboards/)."""
    return project_root() / "grafana"


@dataclass(frozen=True)
class Query:
    """One SQL query a dashboard sends: a panel target, an annotation or a variable."""

    dashboard: str
    #: the panel title, "annotation: NAME" or "variable: NAME"
    panel: str
    #: "time series", "value", "table", "annotation" or "variable"
    shape: str
    ref_id: str
    sql: str
    #: the panel's minimum interval ("1s"), which bounds $__interval
    interval: str | None = None


@dataclass(frozen=True)
class PromQuery:
    """One PromQL expression a panel sends to a Prometheus data source."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    #: the uid of the data source it names
    datasource: str | None


@dataclass
class Dashboard:
    """One dashboard JSON file."""

    path: Path
    data: dict[str, Any]
    queries: list[Query] = field(default_factory=list)
    promql: list[PromQuery] = field(default_factory=list)

    @property
    def title(self) -> str:
        return str(self.data.get("title") or self.path.stem)

    @property
    def variables(self) -> list[Query]:
        """The template-variable queries, in dashboard order (later ones may use earlier)."""
        return [q for q in self.queries if q.shape == "variable"]

    @property
    def panels(self) -> list[str]:
        """Titles of the panels with SQL targets, in dashboard order."""
        seen: dict[str, None] = {}
        for q in self.queries:
            if q.shape not in ("variable", "annotation"):
                seen[q.panel] = None
        return list(seen)


def _sql(node: dict[str, Any]) -> str | None:
    sql = node.get("rawSql")
    return sql if isinstance(sql, str) and sql.strip() else None


def _datasource(panel: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The data source of a target: its own, else its panel's."""
    own = target.get("datasource")
    return own if isinstance(own, dict) else panel.get("datasource") or {}


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels, with those nested in collapsed rows."""
    out = []
    for panel in panels:
        out.append(panel)
        out += _panels(panel.get("panels") or [])
    return out


def load_dashboard(path: Path) -> Dashboard:
    """Read one dashboard JSON file and list its SQL queries.

    Raises ``ValueError`` for a panel type with SQL that :data:`SHAPES` does not know, so a
    new panel type cannot slip past the check unexamined.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    board = Dashboard(path, data)
    for var in data.get("templating", {}).get("list", []):
        query = var.get("query")
        sql = query if isinstance(query, str) else (query or {}).get("rawSql")
        if var.get("type") == "query" and sql:
            board.queries.append(Query(board.title, f"variable: {var['name']}", "variable",
                                       var["name"], sql))  # fmt: skip
    for anno in data.get("annotations", {}).get("list", []):
        sql = _sql(anno.get("target") or {})
        if sql:
            board.queries.append(Query(board.title, f"annotation: {anno['name']}", "annotation",
                                       "Anno", sql))  # fmt: skip
    for panel in _panels(data.get("panels", [])):
        for t in panel.get("targets") or []:
            source = _datasource(panel, t)
            if source.get("type") == PROMETHEUS_TYPE:
                if panel.get("type") not in SHAPES:
                    raise ValueError(f"{path.name}: panel {panel.get('title')!r} has PromQL but "
                                     f"type {panel.get('type')!r}, which the check does not "
                                     "know")  # fmt: skip
                expr = str(t.get("expr") or "")
                board.promql.append(PromQuery(board.title, panel["title"], t.get("refId", "A"),
                                              expr, source.get("uid")))  # fmt: skip
        targets = [t for t in panel.get("targets") or [] if _sql(t)]
        if not targets:
            continue
        if panel.get("type") not in SHAPES:
            raise ValueError(f"{path.name}: panel {panel.get('title')!r} has SQL but type "
                             f"{panel.get('type')!r}, which the check does not know")  # fmt: skip
        for t in targets:
            shape = SHAPES[panel["type"]]
            if t.get("format") == "time_series" and shape != "time series":
                shape = "time series"
            board.queries.append(Query(board.title, panel["title"], shape, t.get("refId", "A"),
                                       t["rawSql"], panel.get("interval")))  # fmt: skip
    log.debug("%s: %d queries, %d PromQL", path.name, len(board.queries), len(board.promql))
    return board


def load_dashboards(folder: Path | None = None) -> list[Dashboard]:
    """Every ``*.json`` dashboard in ``folder`` (default ``grafana/dashboards``), by name."""
    folder = folder or grafana_dir() / "dashboards"
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no dashboard JSON files in {folder}")
    return [load_dashboard(p) for p in paths]


def load_provisioning(root: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """The provisioning files under ``root/provisioning`` (default ``grafana/``):
    ``{"datasources": [...], "providers": [...]}``, each file checked for ``apiVersion: 1``."""
    root = root or grafana_dir()
    out: dict[str, list[dict[str, Any]]] = {"datasources": [], "providers": []}
    for kind, key in (("datasources", "datasources"), ("dashboards", "providers")):
        for path in sorted((root / "provisioning" / kind).glob("*.y*ml")):
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if doc.get("apiVersion") != 1:
                raise ValueError(f"{path}: apiVersion must be 1")
            out[key] += doc.get(key) or []
    return out


def prometheus_datasources(provisioning: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The uids of the provisioned Prometheus data sources."""
    return {str(s.get("uid")) for s in provisioning["datasources"]
            if s.get("type") == PROMETHEUS_TYPE}  # fmt: skip


def workbench_datasource(provisioning: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The provisioned PostgreSQL data source the dashboards use (uid ``workbench-pg``)."""
    sources = [s for s in provisioning["datasources"] if s.get("type") in POSTGRES_TYPES]
    if len(sources) != 1:
        raise ValueError(f"expected one PostgreSQL data source, found {len(sources)}")
    return sources[0]
