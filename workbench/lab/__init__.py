"""What notebooks use: queries over stored runs, and recording a notebook's key results."""

from workbench.lab.queries import (
    TooManyRows,
    alerts,
    ground_truth,
    readings,
    runs,
    sensor_stats,
    windows,
)
from workbench.lab.results import record, recorded

__all__ = [
    "TooManyRows",
    "alerts",
    "ground_truth",
    "readings",
    "record",
    "recorded",
    "runs",
    "sensor_stats",
    "windows",
]
