"""What notebooks use: queries over stored runs (and, later, reports, widgets and plots)."""

from workbench.lab.queries import (
    TooManyRows,
    alerts,
    ground_truth,
    readings,
    runs,
    sensor_stats,
    windows,
)

__all__ = ["TooManyRows", "alerts", "ground_truth", "readings", "runs", "sensor_stats", "windows"]
