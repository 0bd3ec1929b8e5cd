"""The values that flow between the seams: raw messages with their origin, decoded packets, dead letters.

A `Packet` is survey-neutral: the decoder maps ZTF and Rubin fields onto it, and stamps stay compressed until a
model asks for them (most of the decode cost is gunzip + FITS parsing, and a packet no model wants never pays it).
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from schemas.stamps import Stamp, StampEncoding, StampImage, StampKind

__all__ = ["Origin", "Framing", "RawMessage", "Packet", "DeadLetter",
           # the stamp types live with their decoder (schemas/stamps.py); named here for callers of packets
           "Stamp", "StampEncoding", "StampImage", "StampKind"]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message came from: a Kafka coordinate or a file (plus record index inside it)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    file: str | None = None
    index: int | None = None

    def describe(self) -> str:
        if self.topic is not None:
            return f"{self.topic}[{self.partition}]@{self.offset}"
        if self.index is not None:
            return f"{self.file}#{self.index}"
        return str(self.file)

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "file": self.file, "index": self.index}


class Framing(str, enum.Enum):
    """How the bytes of a message are laid out."""

    ZTF = "ztf"              # one Avro object container per message, writer schema embedded
    CONFLUENT = "confluent"  # magic byte 0, 4-byte big-endian schema id, schemaless Avro body
    AUTO = "auto"            # sniff: container magic b"Obj\x01" vs. magic byte 0


@dataclass(slots=True)
class RawMessage:
    """Bytes plus where they came from. Sources produce these; the engine cannot tell Kafka from files.

    ``record`` is set by sources that already hold a decoded record (Parquet rows, records split out of a
    multi-record container); ``value`` then still holds the bytes we keep for the dead-letter sink.
    """

    value: bytes
    origin: Origin
    ingest_time: float = field(default_factory=time.time)
    framing: Framing = Framing.AUTO
    record: dict[str, Any] | None = None
    key: bytes | None = None


@dataclass(slots=True)
class Packet:
    """A decoded alert or archival cutout packet, survey-neutral."""

    candid: int
    object_id: str
    survey: str                       # "ZTF", "LSST", ...
    alert_time: float | None          # unix seconds of the exposure (ZTF: candidate.jd; Rubin: midpointMjdTai)
    ra: float | None
    dec: float | None
    band: str | None                  # "g", "r", "i", ... when known
    schema_version: str
    stamps: dict[StampKind, Stamp]
    origin: Origin
    ingest_time: float
    raw: bytes = b""                  # original bytes, for the dead-letter sink
    flags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # Archival cutout packets: stamps by band, the survey pixel scale (arcsec/px; None: varies per object),
    # truth labels ({"label": str | None, "values": {name: float}}) and the packet's own string id.
    band_stamps: dict[str, Stamp] = field(default_factory=dict)
    pixel_scale: float | None = None
    truth: dict[str, Any] | None = None
    packet_id: str | None = None


@dataclass(slots=True)
class DeadLetter:
    """A message we could not process: original bytes, the error, the stage and the origin."""

    value: bytes
    origin: Origin
    stage: str
    error: str
    error_type: str
    time: float = field(default_factory=time.time)
    candid: int | None = None

    @classmethod
    def from_exception(cls, value: bytes, origin: Origin, exc: BaseException, stage: str | None = None,
                       candid: int | None = None) -> "DeadLetter":
        return cls(value=value, origin=origin, stage=stage or getattr(exc, "stage", "unknown"),
                   error=str(exc) or exc.__class__.__name__, error_type=exc.__class__.__name__, candid=candid)
