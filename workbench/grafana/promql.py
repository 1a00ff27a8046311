"""The metric names a PromQL expression reads, without a Prometheus server.

Why: no Prometheus runs on the project's machines, so ``workbench grafana check`` cannot run
a Prometheus panel's query; what it can check is that every series the query reads is one
the workbench exports (:func:`workbench.metrics.exported_names`). A misspelt metric name is
the mistake that makes such a panel show "No data" forever.

This is a scanner, not a parser: it drops what cannot be a metric name (strings, label
matchers ``{...}``, ranges and subqueries ``[...]``, grouping clauses ``by (...)``, Grafana
variables ``$x``, numbers and durations) and keeps each identifier that is not a function
call or a keyword.

>>> metric_names('histogram_quantile(0.9, sum by (le) (rate(x_bucket{job="p"}[$__interval])))')
['x_bucket']
>>> metric_names("sum(rate(a_total[5m])) / ignoring(stage) group_left b offset 1h > bool 0")
['a_total', 'b']
>>> metric_names('{__name__="up"}')
['up']
"""

from __future__ import annotations

import re

#: Words of PromQL's grammar that look like names.
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                      "group_right", "offset", "bool", "inf", "nan", "atan2"})  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_BRACES = re.compile(r"\{[^}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> list[str]:
    """The metric names ``expr`` reads, in order of first use."""
    named = _NAME_MATCHER.findall(expr)  # {__name__="x"} selects x
    text = _STRING.sub('""', _VARIABLE.sub(" ", expr))
    text = _GROUPING.sub(" ", _BRACKETS.sub(" ", _BRACES.sub(" ", text)))
    found = [m[1] for m in _IDENTIFIER.finditer(text) if not m[2] and m[1] not in KEYWORDS]
    return list(dict.fromkeys(named + found))
