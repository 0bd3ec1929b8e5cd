"""Alerts from files: Avro containers, gzipped Avro, nightly tar archives and Fink-style Parquet.

`FileSource(paths)` yields one `RawMessage` per alert (or a `DeadLetter` for what cannot be read), in a
deterministic order (paths as given; directories walked recursively in sorted order; records in file order),
each with ``Origin(file=..., index=record index in that file)``.

* ``.avro``: a single-record container is passed on as the file's bytes. A multi-record container is cut into
  single-record containers *byte for byte* (each record's encoded bytes under the same writer schema and sync
  marker; nothing is re-encoded), so every message is a valid ZTF-framed alert that can be replayed to Kafka
  or dead-lettered; ``record`` carries the already-decoded (projected) record so the decoder skips the work.
* ``.avro.gz``: gunzipped, then as above.
* ``.tar.gz`` / ``.tgz`` / ``.tar``: streamed with `tarfile` (never extracted to disk); Avro members are handled as
  above with ``origin.file = "archive.tar.gz:member.avro"``; other members are skipped and counted.
* ``.parquet``: each row is an alert (cutouts as struct{fileName, stampData}); ``record`` is the row as a dict
  (the ZTF field layout, so the decoder maps it directly) and ``value`` a single-record Avro container written
  with a schema inferred from the Arrow schema (`stream.decode.arrow`), so replay can send it. The schema,
  its container header and a generated row encoder (`RowWriter`, byte-identical to fastavro's
  ``schemaless_writer``) are built once per file, so a row costs its encoding only.

A file that cannot be read or parsed (bad sync marker, truncation, bad gzip, unreadable Parquet) becomes a
`DeadLetter` with ``stage="read"``, the original bytes (empty for a whole archive that fails part-way: the bytes
are in the archive, which the origin names) and a clear message; iteration carries on. In directories, files
with unknown extensions (and archive members that are not Avro) are skipped, never silently: see
``FileSource.stats["skipped"]`` and ``FileSource.skipped_paths``. A file named explicitly with an unknown
extension is dead-lettered.
"""
from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from schemas.errors import DecodeError, PacketError, StampflowError
from schemas.packet import DeadLetter, Framing, Origin, RawMessage
from stream.decode import Container, SchemaCache, container_header, make_container, parse_container
from stream.decode.arrow import RowWriter, parquet_avro_schema

__all__ = ["FileSource", "KNOWN_SUFFIXES"]

KNOWN_SUFFIXES = (".avro", ".avro.gz", ".tar.gz", ".tgz", ".tar", ".parquet")
#: How many skipped paths `FileSource.skipped_paths` lists (the count in ``stats["skipped"]`` is exact).
SKIPPED_PATHS_SHOWN = 20
_STATS_KEYS = ("files", "messages", "dead_letters", "skipped", "empty")
_PARQUET_BATCH = 256


def _kind(path: str) -> str | None:
    name = path.lower()
    for suffix, kind in ((".avro.gz", "avro.gz"), (".avro", "avro"), (".tar.gz", "tar"), (".tgz", "tar"),
                         (".tar", "tar"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return kind
    return None


class FileSource:
    """Alerts from files and directories (see the module docstring).

    Counters, for the run in progress or the last one (reset when an iteration starts; all zero before):

    * ``stats``: a `Counter` that always holds the keys ``files`` (files read), ``messages`` (`RawMessage` items
      yielded), ``dead_letters`` (`DeadLetter` items yielded), ``skipped`` and ``empty`` (containers without
      records, which yield nothing).
    * ``stats["skipped"]``: how many inputs were skipped without a dead letter: files with an unknown extension
      found while walking a directory (counted as soon as iteration starts) and archive members that are not
      ``.avro``/``.avro.gz`` (counted as the archive is read). Explicitly named files are never skipped (an
      unknown extension is dead-lettered instead).
    * ``skipped_paths``: the first `SKIPPED_PATHS_SHOWN` (20) of them, as strings (``"dir/file.npy"``,
      ``"night.tar.gz:member.txt"``), for a report such as "skipped 12 files (a.npy, b.csv, ...)".
      ``skipped`` is the full list.

    `files` and `count` do not touch these counters, so calling `count` for a progress bar (before or after
    iterating) leaves them as they are.
    """

    def __init__(self, paths: "str | os.PathLike | Iterable[str | os.PathLike]", *, engine: str = "auto"):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            if not p.exists():
                raise StampflowError(f"no such file or directory: {p}")
        self.engine = engine
        self.skipped: list[str] = []
        self.stats: Counter[str] = Counter(dict.fromkeys(_STATS_KEYS, 0))
        self._cache = SchemaCache()

    @property
    def skipped_paths(self) -> list[str]:
        """The first `SKIPPED_PATHS_SHOWN` skipped paths of the current/last iteration (``stats["skipped"]``
        has the count)."""
        return self.skipped[:SKIPPED_PATHS_SHOWN]

    # -- discovery ------------------------------------------------------------------------------------------
    def files(self) -> list[tuple[Path, bool]]:
        """(path, named explicitly) for every file, in iteration order (skipped files left out)."""
        return self._discover()[0]

    def _discover(self) -> tuple[list[tuple[Path, bool]], list[str]]:
        out: list[tuple[Path, bool]] = []
        skipped: list[str] = []
        for p in self.paths:
            if p.is_dir():
                for f in sorted(x for x in p.rglob("*") if x.is_file()):
                    if _kind(f.name) is None:
                        skipped.append(str(f))
                    else:
                        out.append((f, False))
            else:
                out.append((p, True))
        return out, skipped

    # -- iteration ------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[RawMessage | DeadLetter]:
        return self.iter_messages()

    def iter_messages(self) -> Iterator[RawMessage | DeadLetter]:
        files, skipped = self._discover()
        self.skipped = skipped
        self.stats = Counter(dict.fromkeys(_STATS_KEYS, 0))
        self.stats["skipped"] = len(skipped)
        for path, _explicit in files:
            self.stats["files"] += 1
            for item in self._iter_file(path):
                self.stats["dead_letters" if isinstance(item, DeadLetter) else "messages"] += 1
                yield item

    def _iter_file(self, path: Path) -> Iterator[RawMessage | DeadLetter]:
        name = str(path)
        kind = _kind(path.name)
        if kind is None:
            yield _dead(b"", Origin(file=name), f"unknown file type (expected one of {', '.join(KNOWN_SUFFIXES)})")
            return
        if kind == "tar":
            yield from self._iter_tar(path)
            return
        if kind == "parquet":
            yield from self._iter_parquet(path)
            return
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield _dead(b"", Origin(file=name), f"cannot read file: {exc}")
            return
        yield from self._iter_avro_bytes(data, name, gzipped=(kind == "avro.gz"))

    def _iter_avro_bytes(self, data: bytes, name: str, *, gzipped: bool) -> Iterator[RawMessage | DeadLetter]:
        original = data
        if gzipped:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                yield _dead(original, Origin(file=name), f"not a readable gzip file: {exc}")
                return
        try:
            container = parse_container(data)
        except DecodeError as exc:
            yield _dead(original, Origin(file=name), str(exc), "DecodeError")
            return
        total = container.count
        if total == 0:
            self.stats["empty"] += 1
            return
        if total == 1:
            yield RawMessage(value=data, origin=Origin(file=name, index=0), framing=Framing.ZTF)
            return
        yield from self._split(container, original, name)

    def _split(self, container: Container, original: bytes, name: str) -> Iterator[RawMessage | DeadLetter]:
        try:
            entry = self._cache.get(container.schema_bytes)
        except PacketError as exc:
            yield _dead(original, Origin(file=name), str(exc))
            return
        index = 0
        for block_no, (count, buf, start, end) in enumerate(container.blocks):
            first, pos = index, start
            for _ in range(count):
                try:
                    rec, new = entry.read(buf, pos, end, self.engine)
                    if new > end:
                        raise DecodeError("record runs past its block")
                except Exception as exc:
                    msg = exc if isinstance(exc, PacketError) else f"{exc.__class__.__name__}: {exc}"
                    yield _dead(original, Origin(file=name, index=index),
                                f"record {index} (block {block_no}) does not decode: {msg}; "
                                f"records {index}..{first + count - 1} of this block are lost")
                    break
                value = make_container(entry.schema_bytes, [buf[pos:new]], sync=container.sync)
                yield RawMessage(value=value, origin=Origin(file=name, index=index), framing=Framing.ZTF,
                                 record=rec)
                pos = new
                index += 1
            else:
                if pos != end:
                    yield _dead(original, Origin(file=name, index=index),
                                f"block {block_no}: {end - pos} bytes left after its {count} records")
            index = first + count

    def _iter_tar(self, path: Path) -> Iterator[RawMessage | DeadLetter]:
        name = str(path)
        try:
            tf = tarfile.open(path, mode="r|*")  # streaming: members are read in order, nothing touches disk
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            yield _dead(_small_file_bytes(path), Origin(file=name), f"not a readable tar archive: {exc}")
            return
        member_name = None
        try:
            with tf:
                for member in tf:
                    if not member.isfile():
                        continue
                    member_name = member.name
                    kind = _kind(member.name)
                    if kind not in ("avro", "avro.gz"):
                        self.skipped.append(f"{name}:{member.name}")
                        self.stats["skipped"] += 1
                        continue
                    fh = tf.extractfile(member)
                    data = fh.read() if fh is not None else b""
                    yield from self._iter_avro_bytes(data, f"{name}:{member.name}", gzipped=(kind == "avro.gz"))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            where = f" after member {member_name}" if member_name else ""
            yield _dead(b"", Origin(file=name), f"tar archive unreadable{where}: {exc.__class__.__name__}: {exc}")

    def _iter_parquet(self, path: Path) -> Iterator[RawMessage | DeadLetter]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = str(path)
        try:
            pf = pq.ParquetFile(path)
            arrow_schema = pf.schema_arrow
            target, avro_schema, renames = parquet_avro_schema(arrow_schema, path)
            writer = RowWriter(avro_schema, renames)  # once per file: schema parsed, row encoder generated
            schema_text = _json(avro_schema)
            header = container_header(schema_text)  # once per file: every row's container starts with it
        except Exception as exc:
            yield _dead(_small_file_bytes(path), Origin(file=name), f"unreadable Parquet file: "
                        f"{exc.__class__.__name__}: {exc}")
            return
        index = 0
        try:
            for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
                table = pa.Table.from_batches([batch])
                if target != arrow_schema:
                    table = table.cast(target)
                for row in table.to_pylist():
                    origin = Origin(file=name, index=index)
                    index += 1
                    try:
                        value = make_container(schema_text, [writer.encode(row)], header=header)
                    except Exception as exc:
                        yield _dead(b"", origin, f"Parquet row {origin.index} cannot be written as Avro: "
                                    f"{exc.__class__.__name__}: {exc}")
                        continue
                    yield RawMessage(value=value, origin=origin, framing=Framing.ZTF, record=row)
        except Exception as exc:
            yield _dead(b"", Origin(file=name, index=index), f"Parquet file unreadable at row {index}: "
                        f"{exc.__class__.__name__}: {exc}")

    # -- counting -------------------------------------------------------------------------------------------
    def count(self) -> int:
        """How many items iteration will yield (alerts plus dead letters), for a progress-bar total.

        Cheap: Parquet from the footer, Avro from container block counts (no record is decoded); archives
        are read through once (decompression only). A file that fails to parse counts as one (its dead letter).
        """
        import pyarrow.parquet as pq

        total = 0
        for path, _ in self.files():
            kind = _kind(path.name)
            try:
                if kind == "parquet":
                    total += pq.ParquetFile(path).metadata.num_rows
                elif kind == "tar":
                    with tarfile.open(path, mode="r|*") as tf:
                        for member in tf:
                            mk = _kind(member.name) if member.isfile() else None
                            if mk in ("avro", "avro.gz"):
                                fh = tf.extractfile(member)
                                total += _count_avro(fh.read() if fh else b"", mk == "avro.gz")
                elif kind in ("avro", "avro.gz"):
                    total += _count_avro(path.read_bytes(), kind == "avro.gz")
                else:
                    total += 1
            except Exception:
                total += 1
        return total


def _count_avro(data: bytes, gzipped: bool) -> int:
    try:
        if gzipped:
            data = gzip.decompress(data)
        return parse_container(data).count
    except Exception:
        return 1


def _dead(value: bytes, origin: Origin, error: str, error_type: str = "ReadError") -> DeadLetter:
    return DeadLetter(value=value, origin=origin, stage="read", error=error, error_type=error_type)


def _small_file_bytes(path: Path, limit: int = 64 << 20) -> bytes:
    try:
        return path.read_bytes() if path.stat().st_size <= limit else b""
    except OSError:
        return b""


def _json(obj: Any) -> str:
    import json
    return json.dumps(obj, separators=(",", ":"))
