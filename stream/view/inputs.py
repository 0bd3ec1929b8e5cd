"""What the viewer shows, read once at start: results, the packets they came from, and the dead letters.

Two kinds of input, one shape of output (`ViewData`):

* a results file (JSON lines or an Avro container, told apart by their first bytes) with the input files or
  archives it was made from (anything `stampflow classify` reads, through the same `FileSource`), and
  optionally the dead-letter directory `classify` wrote (``dead_letters.avro`` keeps the original bytes);
* a Kafka result topic with its input topic (and optionally the dead-letter topic): `kafka_inputs`.

Results are matched to their packets by origin (file and record index, or topic/partition/offset), falling back
to candid when the inputs were given under another path. A malformed results file is one `StampflowError` line
naming the file and the record, never a traceback.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from schemas.errors import PacketError, StampflowError
from schemas.packet import DeadLetter, Origin, RawMessage
from stream.decode import Decoder
from stream.view.index import ResultIndex
from stream.view.spool import Spool

log = logging.getLogger(__name__)

_REQUIRED = ("candid", "objectId", "source", "predictions")
_AVRO_MAGIC = b"Obj\x01"


@dataclass
class ViewData:
    """Everything the server answers from. ``results[i]`` is result i as compact JSON bytes (parsed per page)."""

    results: list[bytes] = field(default_factory=list)
    index: ResultIndex = field(default_factory=ResultIndex)
    spool: Spool = field(default_factory=Spool)
    entry_of: list[int] = field(default_factory=list)          # result i -> spool entry index, -1 if not found
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    dead_spool: Spool = field(default_factory=Spool)
    described: str = ""                                        # what was loaded, for the page header
    unmatched: int = 0                                         # results whose packet was not among the inputs

    def add_result(self, record: Any, raw: bytes | None = None, where: str = "result") -> None:
        """Check, index and match a result to its packet (read the inputs into the spool first). A record that is
        not a stampflow result is one `StampflowError` naming ``where``."""
        check_record(record, where)
        try:
            self.index.add(record)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise StampflowError(f"{where}: a field does not have the result schema's type ({exc.__class__.__name__}:"
                                 f" {exc})") from None
        self.results.append(raw if raw is not None else json.dumps(record, separators=(",", ":")).encode())
        entry = self.spool.find(record["source"], record.get("candid"))
        self.entry_of.append(-1 if entry is None else entry.index)
        self.unmatched += entry is None

    def add_dead_letter(self, record: dict[str, Any]) -> None:
        """A dead-letter record (schemas/dead_letter/v1.avsc); its original bytes go to the dead spool."""
        value = bytes(record.get("value") or b"")
        src = record.get("source") or {}
        origin = Origin(**{k: src.get(k) for k in ("topic", "partition", "offset", "file", "index")})
        self.dead_spool.add(value, origin)
        summary = {k: v for k, v in record.items() if k != "value"}
        summary.update(id=len(self.dead_letters), origin=origin.describe(), bytes=len(value),
                       sha256=hashlib.sha256(value).hexdigest())
        self.dead_letters.append(summary)

    def warn_unmatched(self) -> None:
        if self.results and self.unmatched:
            log.warning("%d of %d results have no packet among the inputs (no stamps for them)", self.unmatched,
                        len(self.results))

    def close(self) -> None:
        self.spool.close()
        self.dead_spool.close()


def check_record(record: Any, where: str) -> dict[str, Any]:
    """A result record, or one `StampflowError` line saying what is wrong with it and where."""
    if not isinstance(record, dict):
        raise StampflowError(f"{where}: not a result record (a JSON object), found {type(record).__name__}")
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise StampflowError(f"{where}: not a stampflow result (missing {', '.join(missing)})")
    preds = record["predictions"]
    if not isinstance(preds, list) or not all(isinstance(p, dict) and "model" in p and "label" in p for p in preds):
        raise StampflowError(f"{where}: predictions must be a list of {{model, label, ...}} records")
    if not isinstance(record["source"], dict):
        raise StampflowError(f"{where}: source must be a record")
    return record


def read_results_file(path: Path, data: ViewData) -> int:
    """Results from a JSON-lines or Avro file into ``data``; returns how many."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise StampflowError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    n = 0
    for rec, raw, where in (_avro_results(path) if head == _AVRO_MAGIC else _jsonl_results(path)):
        data.add_result(rec, raw, where)
        n += 1
    if n == 0:
        raise StampflowError(f"results file {path} holds no results")
    return n


def _jsonl_results(path: Path) -> Iterator[tuple[Any, bytes | None, str]]:
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
                raise StampflowError(f"{path}: line {lineno} is not JSON ({reason}); expected the JSON lines or "
                                     f"Avro results that stampflow classify writes") from None
            yield rec, line, f"{path}: line {lineno}"


def _avro_results(path: Path) -> Iterator[tuple[Any, bytes | None, str]]:
    import fastavro

    with open(path, "rb") as fh:
        n = 0
        try:
            for rec in fastavro.reader(fh):
                yield rec, None, f"{path}: record {n}"
                n += 1
        except StampflowError:
            raise
        except Exception as exc:  # fastavro raises many types for bad bytes; all are the file's fault
            raise StampflowError(f"{path}: Avro results unreadable at record {n} ({exc.__class__.__name__}: "
                                 f"{exc})") from None


def read_dead_letter_dir(directory: Path, data: ViewData) -> int:
    """``dead_letters.avro`` as `classify` writes it (with the original bytes); returns how many."""
    import fastavro

    path = Path(directory) / "dead_letters.avro"
    if not Path(directory).is_dir():
        raise StampflowError(f"dead-letter directory {directory} does not exist")
    if not path.is_file():
        return 0  # a run without dead letters writes none
    n = 0
    try:
        with open(path, "rb") as fh:
            for rec in fastavro.reader(fh):
                data.add_dead_letter(rec)
                n += 1
    except Exception as exc:
        raise StampflowError(f"{path}: dead letters unreadable at record {n} ({exc.__class__.__name__}: "
                             f"{exc})") from None
    return n


def spool_messages(items: Iterable[RawMessage | DeadLetter], data: ViewData, decoder: Decoder) -> int:
    """Input messages into the spool, each decoded once (through the worker's decoder) for its candid and the
    names of its stamps; returns how many. Messages the source could not read carry no result to show."""
    n = 0
    for item in items:
        if isinstance(item, DeadLetter):
            continue
        entry = data.spool.add(item.value, item.origin, item.framing)
        n += 1
        try:
            packet = decoder.decode(RawMessage(value=item.value, origin=item.origin, framing=item.framing,
                                               record=item.record))
        except PacketError as exc:
            entry.error = str(exc)
            continue
        data.spool.note_candid(entry, packet.candid)
        entry.stamps = list(packet.band_stamps) if packet.band_stamps else [k.value for k in packet.stamps]
    return n


def describe(results: int, where: str, packets: int, inputs: list[str], dead: int | None) -> str:
    """One line for the page header: counts and where they came from (names, not full paths)."""
    short = [Path(p).name or p for p in inputs]
    text = (f"{results} result{'s' * (results != 1)} from {Path(where).name or where}; {packets} "
            f"packet{'s' * (packets != 1)} from {', '.join(short[:4])}{f' and {len(short) - 4} more' * (len(short) > 4)}")
    return text if dead is None else text + f"; {dead} dead letter{'s' * (dead != 1)}"


def load_files(results: Path, inputs: list[Path], dead_letters: Path | None, decoder: Decoder) -> ViewData:
    from stream.file_source import FileSource

    files = FileSource(inputs)  # bad paths fail here with one line, before anything is read
    data = ViewData()
    m = spool_messages(files.iter_messages(), data, decoder)  # packets first: results are matched as they come
    n = read_results_file(results, data)
    d = read_dead_letter_dir(dead_letters, data) if dead_letters is not None else 0
    data.warn_unmatched()
    data.described = describe(n, str(results), m, [str(p) for p in inputs], d if dead_letters is not None else None)
    return data
