"""The cold archive: raw readings (and window results) out of PostgreSQL into Parquet.

Hive-partitioned by UTC date and run, zstd-compressed, in a local folder by default or in
S3 / MinIO through ``pyarrow.fs``; see ``tables.py`` for the layout, ``parquet.py`` for
the format choices, ``writer.py`` (archival, safe to run twice), ``compact.py`` (small
files merged per partition) and ``reader.py`` (``pyarrow.dataset`` with pruning).

>>> sorted(TABLES)
['readings', 'windows']
"""

from workbench.archive.compact import Compaction, compact
from workbench.archive.fs import Location, default_uri, open_location
from workbench.archive.reader import read, read_readings, read_windows
from workbench.archive.tables import READINGS, TABLES, WINDOWS, ArchivedTable
from workbench.archive.writer import ArchivedFile, ArchiveReport, archive, check_period
from workbench.errors import ArchiveError, ArchiveUnavailable

__all__ = [
    "READINGS",
    "TABLES",
    "WINDOWS",
    "ArchiveError",
    "ArchiveReport",
    "ArchiveUnavailable",
    "ArchivedFile",
    "ArchivedTable",
    "Compaction",
    "Location",
    "archive",
    "check_period",
    "compact",
    "default_uri",
    "open_location",
    "read",
    "read_readings",
    "read_windows",
]
