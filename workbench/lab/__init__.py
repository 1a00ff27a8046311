"""What notebooks use: queries over stored runs (and, later, reports, widgets and plots)."""

from workbench.lab.queries import readings, runs

__all__ = ["readings", "runs"]
