"""IoT streaming workbench: simulate a factory, stream it through Kafka, process, store, report."""

from workbench.config import Settings
from workbench.errors import WorkbenchError

__all__ = ["Settings", "WorkbenchError"]
__version__ = "0.1.0"
