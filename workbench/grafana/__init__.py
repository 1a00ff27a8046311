"""Grafana support: the provisioned dashboards, read and checked without a Grafana server.

``dashboards`` loads the provisioning files and dashboard JSON, ``macros`` expands
Grafana's PostgreSQL macros and template variables the way the data source does, and
``check`` runs every panel's SQL against the workbench database (``workbench grafana check``).
"""
