"""Where the values of final windows wait out their correction horizon: compressed segments.

A final window is only read again if a late reading corrects it, which is rare; yet under
``WORKBENCH_LATE_POLICY=update`` its values must stay until its correction horizon has passed
(10 minutes of event time after its end by default), to give an exact corrected result. Kept
in the windows' arena they were most of a processor's memory and of every checkpoint, and
grew with the horizon. So once a window has had its final result, its values (sorted by
then) move here: appended to an open segment, which is sealed, zstd-compressed, once it
holds :data:`SEGMENT_VALUES` values. A sealed segment never changes; it is dropped once no
window refers to it (every window in it is past its horizon, or was corrected and moved on).

What this gives, besides memory:

- incremental checkpoints: a sealed segment goes to the database once, with the first
  checkpoint that refers to it, and is deleted there with the first one that no longer
  does; a checkpoint itself holds only the open segment and the live windows' other state;
- a correction costs a look-up (the open segment) or the decompression of one segment
  (a few milliseconds; the last one read is kept).

This is what Kafka Streams and Flink do with RocksDB for window state kept through a grace
period or allowed lateness, without the dependency: the values are written once, read back
almost never, and compressed well (sorted readings of one sensor share exponent and leading
digits).

>>> store = ColdStore(segment_values=4)
>>> first = store.reserve(3)  # room for three values in the open segment
>>> store.buffer[first : first + 3] = [1.0, 2.0, 3.0]
>>> seg = store.commit(3)
>>> store.values(seg, first, 3).tolist()
[1.0, 2.0, 3.0]
>>> _ = store.reserve(3)  # they would not fit: the open segment is sealed first
>>> seg in store.sealed
True
>>> store.values(seg, first, 3).tolist()  # read back from the compressed segment
[1.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import zstandard

__all__ = ["SEGMENT_VALUES", "ColdStore"]

#: Values per sealed segment (2 MB uncompressed): large enough to compress well and to keep
#: the segments few, small enough to read one back in a few milliseconds.
SEGMENT_VALUES = 1 << 18
_LEVEL = 3


class ColdStore:
    """The values of one partition's final windows, in segments numbered from 0 up.

    Attributes
    ----------
    buffer
        The open segment's values (its first :attr:`size` are in use).
    open_id
        The open segment's number.
    sealed
        Sealed segments by number: their values, zstd-compressed.
    """

    def __init__(self, segment_values: int | None = None) -> None:
        segment_values = SEGMENT_VALUES if segment_values is None else segment_values
        if segment_values < 1:
            raise ValueError(f"segment_values must be >= 1, not {segment_values}")
        self.segment_values = segment_values
        self.buffer = np.empty(0)
        self.size = 0
        self.open_id = 0
        self.sealed: dict[int, bytes] = {}
        self._counts: dict[int, int] = {}  # values per sealed segment
        self._handed: set[int] = set()  # sealed segments a checkpoint has carried
        self._dropped: list[int] = []  # ... and dropped since (to delete where stored)
        self._cache: tuple[int, np.ndarray] | None = None
        #: sealed segments decompressed to read windows back (corrections)
        self.decompressed = 0

    def reserve(self, n: int) -> int:
        """Room for ``n`` more values in the open segment (sealed first if they would not
        fit and it is not empty); where they go in :attr:`buffer`. Write them, then
        :meth:`commit`."""
        if self.size and self.size + n > self.segment_values:
            self._seal()
        if self.size + n > self.buffer.size:
            grown = np.empty(max(self.size + n, min(2 * self.buffer.size, self.segment_values)))
            grown[: self.size] = self.buffer[: self.size]
            self.buffer = grown
        return self.size

    def commit(self, n: int) -> int:
        """Take the ``n`` values written after :meth:`reserve` into the open segment
        (:attr:`open_id`); its number. It is sealed at once if that made it full: write
        the values before."""
        self.size += n
        segment = self.open_id
        if self.size >= self.segment_values:
            self._seal()
        return segment

    def values(self, segment: int, offset: int, n: int) -> np.ndarray:
        """The ``n`` values at ``offset`` of a segment (a copy)."""
        if segment == self.open_id:
            return self.buffer[offset : offset + n].copy()
        if self._cache is None or self._cache[0] != segment:
            if segment not in self.sealed:
                raise KeyError(f"window values in segment {segment}, which is not held")
            raw = zstandard.ZstdDecompressor().decompress(
                self.sealed[segment], max_output_size=8 * self._counts[segment]
            )
            self._cache = (segment, np.frombuffer(raw, np.float64))
            self.decompressed += 1
        return self._cache[1][offset : offset + n].copy()

    def collect(self, referenced: Iterable[int]) -> None:
        """Drop the sealed segments no window refers to any more."""
        keep = {int(s) for s in referenced}
        for segment in [s for s in self.sealed if s not in keep]:
            del self.sealed[segment], self._counts[segment]
            if segment in self._handed:
                self._handed.discard(segment)
                self._dropped.append(segment)
            if self._cache is not None and self._cache[0] == segment:
                self._cache = None

    def take_new(self) -> dict[int, bytes]:
        """The sealed segments no checkpoint has carried yet, marked carried from now on."""
        new = {s: data for s, data in self.sealed.items() if s not in self._handed}
        self._handed.update(new)
        return new

    def take_dropped(self) -> list[int]:
        """The segments a checkpoint carried that are dropped since: where checkpoints are
        stored, they can go (with the next checkpoint, which no longer refers to them)."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def arrays(self) -> dict[str, np.ndarray]:
        """The open segment, and what to expect of the sealed ones, for a checkpoint (the
        sealed segments travel on their own: :meth:`take_new`)."""
        sealed = sorted(self.sealed)
        return {
            "open": self.buffer[: self.size],
            "open_id": np.array(self.open_id),
            "sealed": np.array(sealed, np.int64),
            "counts": np.array([self._counts[s] for s in sealed], np.int64),
        }

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        segments: Mapping[int, bytes],
        segment_values: int | None = None,
    ) -> ColdStore:
        """Rebuild from :meth:`arrays` and the sealed segments it names (all of them, carried
        by this checkpoint or earlier ones; others given are left for :meth:`take_dropped`).
        Raises ``KeyError`` naming a missing segment."""
        store = cls(segment_values)
        store.buffer = np.array(arrays["open"], np.float64)
        store.size = int(store.buffer.size)
        store.open_id = int(arrays["open_id"])
        sealed, counts = arrays["sealed"].tolist(), arrays["counts"].tolist()
        for segment, count in zip(sealed, counts, strict=True):
            if segment not in segments:
                raise KeyError(f"checkpoint segment {segment} is missing")
            store.sealed[segment], store._counts[segment] = segments[segment], count
        store._handed = set(store.sealed)
        store._dropped = sorted(set(segments) - store._handed)
        return store

    def _seal(self) -> None:
        data = self.buffer[: self.size]
        self.sealed[self.open_id] = zstandard.ZstdCompressor(level=_LEVEL).compress(data.data)
        self._counts[self.open_id] = self.size
        self.open_id += 1
        self.size = 0
        if self.buffer.size > 2 * self.segment_values:  # grown for one big freeze
            self.buffer = np.empty(self.segment_values)
