"""The input messages a viewer shows, kept in a temporary file rather than in memory.

100,000 ZTF alerts are about 7 GB of bytes; the viewer needs any one of them on demand (a thumbnail, a detail
view), never all at once. So each message is appended to one spool file as it is read, and an in-memory entry
keeps its offset and length, its origin and what decoding it once told us (candid, stamp names).
"""
from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from schemas.packet import Framing, Origin


def origin_key(source: dict[str, Any] | Origin) -> tuple:
    """One hashable key for a result's ``source`` record and a message's `Origin`: the Kafka coordinate, or the
    file (made absolute, so ``classify tests/x`` and ``view $PWD/tests/x`` agree) and the record index."""
    get = source.get if isinstance(source, dict) else lambda k: getattr(source, k)
    if get("topic") is not None:
        return ("kafka", get("topic"), get("partition"), get("offset"))
    file = get("file")
    return ("file", os.path.abspath(file) if file else None, get("index"))


@dataclass(slots=True)
class SpoolEntry:
    index: int                                         # position in `Spool.entries`
    offset: int
    length: int
    origin: Origin
    framing: Framing
    candid: int | None = None
    stamps: list[str] = field(default_factory=list)   # stamp names: science/template/difference or bands
    error: str | None = None                           # why it did not decode, when it did not


class Spool:
    """Append-only message store on disk; entries found by origin key or, as a fallback, by candid."""

    def __init__(self, directory: str | None = None):
        self._fh = tempfile.TemporaryFile(prefix="stampflow-view-", dir=directory)
        self._lock = threading.Lock()
        self._size = 0
        self.entries: list[SpoolEntry] = []
        self._by_origin: dict[tuple, int] = {}
        self._by_candid: dict[int, int] = {}

    def add(self, value: bytes, origin: Origin, framing: Framing = Framing.AUTO) -> SpoolEntry:
        with self._lock:
            self._fh.seek(self._size)
            self._fh.write(value)
            entry = SpoolEntry(index=len(self.entries), offset=self._size, length=len(value), origin=origin, framing=framing)
            self._size += len(value)
        self._by_origin[origin_key(origin)] = len(self.entries)
        self.entries.append(entry)
        return entry

    def note_candid(self, entry: SpoolEntry, candid: int) -> None:
        entry.candid = candid
        self._by_candid.setdefault(candid, entry.index)

    def find(self, source: dict[str, Any], candid: int | None) -> SpoolEntry | None:
        """The message a result came from: by its origin, else (inputs read from another path) by candid."""
        i = self._by_origin.get(origin_key(source))
        if i is None and candid is not None:
            i = self._by_candid.get(candid)
        return None if i is None else self.entries[i]

    def read(self, entry: SpoolEntry) -> bytes:
        with self._lock:
            self._fh.seek(entry.offset)
            return self._fh.read(entry.length)

    def __len__(self) -> int:
        return len(self.entries)

    def close(self) -> None:
        self._fh.close()
