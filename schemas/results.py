"""Typed records mirroring the Avro result and dead-letter schemas, and the Avro (de)serialisers.

The Avro files under ``schemas/`` are the contract. The records here are slotted dataclasses, not pydantic
models, because the worker builds one per alert on its hot path: constructing a dataclass costs about a
microsecond, a pydantic model (even through ``model_construct``) tens of microseconds. Validation is still one
call away for readers of the topics: `validate_result` and `validate_dead_letter` run pydantic over the same
classes (``extra="forbid"``). `tests/unit/test_result_schema.py` checks every class field by field (names, order,
defaults) against its ``.avsc`` file, so the mirror cannot drift from the contract.

Field order follows the Avro schema, which is why the classes are ``kw_only``: Avro puts fields with defaults
(``schema_version``) before fields without, and ``record()`` must emit the keys in schema order (the JSON-lines
sink writes them in that order).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import fastavro
from pydantic import ConfigDict, TypeAdapter

from schemas.packet import DeadLetter, Origin

SCHEMA_DIR = Path(__file__).resolve().parent

#: The result schema version the worker writes: v2 added cutout-packet fields, v2.1 the per-prediction
#: out_of_distribution flag; only defaulted fields were added, so v1 and v2 readers resolve it.
RESULT_VERSION = "2.1"
#: Every result schema in schemas/classification/, oldest first.
RESULT_VERSIONS = ("1", "2", "2.1")
DEAD_LETTER_VERSION = 1

# Readers validate what they consume: an unknown key means a schema mismatch, not something to ignore.
_FORBID = ConfigDict(extra="forbid", protected_namespaces=())


@dataclass(slots=True, kw_only=True)
class Source:
    """Where the packet came from. Its own record rather than `Origin`, so the contract does not change when
    the runtime type grows a field."""

    __pydantic_config__ = _FORBID
    topic: Optional[str] = None      # Kafka topic (None for files)
    partition: Optional[int] = None  # Kafka partition
    offset: Optional[int] = None     # Kafka offset
    file: Optional[str] = None       # input file (None for Kafka)
    index: Optional[int] = None      # record index inside a multi-record file

    @classmethod
    def of(cls, origin: Origin) -> "Source":
        return cls(topic=origin.topic, partition=origin.partition, offset=origin.offset, file=origin.file,
                   index=origin.index)

    def record(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset, "file": self.file,
                "index": self.index}


@dataclass(slots=True, kw_only=True)
class ModelPredictionV1:
    """One model's answer, schema v1."""

    __pydantic_config__ = _FORBID
    model: str                        # model name in the registry
    model_version: str                # artifact version
    label: str                        # most probable class; for regression the outputs as name=value
    probabilities: dict[str, float]   # class -> probability (vote fraction for fractions); {} for regression
    uncertainty: float                # model-specific, bigger is less sure

    def record(self) -> dict[str, Any]:
        return {"model": self.model, "model_version": self.model_version, "label": self.label,
                "probabilities": self.probabilities, "uncertainty": self.uncertainty}


@dataclass(slots=True, kw_only=True)
class ModelPrediction(ModelPredictionV1):
    """One model's answer, schema v2.1: the v1 fields, what regression and truth-labelled packets need (v2), and
    the out-of-distribution flag (v2.1)."""

    task: str = "classification"                            # classification, binary, fractions or regression
    values: dict[str, float] = field(default_factory=dict)  # regression outputs by name
    correct: Optional[bool] = None                          # label == truth label, when the packet has one
    out_of_distribution: bool = False                       # input outside the model's training data (its rule)

    def record(self) -> dict[str, Any]:
        return {"model": self.model, "model_version": self.model_version, "label": self.label,
                "probabilities": self.probabilities, "uncertainty": self.uncertainty, "task": self.task,
                "values": self.values, "correct": self.correct, "out_of_distribution": self.out_of_distribution}


@dataclass(slots=True, kw_only=True)
class Truth:
    """Truth labels an archival packet carried, copied so results can be scored offline."""

    __pydantic_config__ = _FORBID
    label: Optional[str] = None                             # class label, if any
    values: dict[str, float] = field(default_factory=dict)  # regression targets by name

    def record(self) -> dict[str, Any]:
        return {"label": self.label, "values": self.values}


@dataclass(slots=True, kw_only=True)
class ClassificationResultV1:
    """Schema v1 (schemas/classification/v1.avsc): what a v1 reader resolves a v2 result to."""

    __pydantic_config__ = _FORBID
    schema_version: str = "1"                  # version of the result schema
    candid: int                                # alert candidate id (cutouts: 63-bit hash of packet_id)
    objectId: str                              # survey object id (cutouts: the packet id)
    survey: str                                # ZTF, LSST, FIRST, ...
    source: Source                             # Kafka coordinate or file of the input
    alert_time: Optional[float] = None         # exposure time, unix seconds
    ingest_time: float                         # when the worker received the message, unix seconds
    classified_time: float                     # when the result was built, unix seconds
    flags: list[str] = field(default_factory=list)  # quality flags
    predictions: list[ModelPredictionV1]       # one per model that ran
    code_version: str                          # stampflow version + git commit
    config_hash: str                           # hash of the effective config, secrets excluded


@dataclass(slots=True, kw_only=True)
class ClassificationResult:
    """Schema v2.1 (schemas/classification/v2.1.avsc): the result the worker publishes, one per decoded packet."""

    __pydantic_config__ = _FORBID
    schema_version: str = str(RESULT_VERSION)  # version of the result schema
    candid: int                                # alert candidate id (cutouts: 63-bit hash of packet_id)
    objectId: str                              # survey object id (cutouts: the packet id)
    survey: str                                # ZTF, LSST, FIRST, ...
    source: Source                             # Kafka coordinate or file of the input
    alert_time: Optional[float] = None         # exposure time, unix seconds
    ingest_time: float                         # when the worker received the message, unix seconds
    classified_time: float                     # when the result was built, unix seconds
    flags: list[str] = field(default_factory=list)  # quality flags, e.g. unrouted, out_of_distribution
    predictions: list[ModelPrediction]         # one per model that ran; [] when unrouted
    packet_id: Optional[str] = None            # archive id of a cutout packet (None for alerts)
    dataset: Optional[str] = None              # archive / data set of a cutout packet
    truth: Optional[Truth] = None              # truth labels the packet carried
    code_version: str                          # stampflow version + git commit
    config_hash: str                           # hash of the effective config, secrets excluded

    def record(self) -> dict[str, Any]:
        """The Avro/JSON record, keys in schema order. Written out by hand: it runs once per alert."""
        return {"schema_version": self.schema_version, "candid": self.candid, "objectId": self.objectId,
                "survey": self.survey, "source": self.source.record(), "alert_time": self.alert_time,
                "ingest_time": self.ingest_time, "classified_time": self.classified_time, "flags": self.flags,
                "predictions": [p.record() for p in self.predictions], "packet_id": self.packet_id,
                "dataset": self.dataset, "truth": None if self.truth is None else self.truth.record(),
                "code_version": self.code_version, "config_hash": self.config_hash}


@dataclass(slots=True, kw_only=True)
class DeadLetterRecord:
    """schemas/dead_letter/v1.avsc: a message that failed, with its original bytes."""

    __pydantic_config__ = _FORBID
    schema_version: str = str(DEAD_LETTER_VERSION)  # version of the dead-letter schema
    value: bytes                     # the original message bytes, unchanged
    stage: str                       # read, decode, cutout, preprocess, classify or publish
    error: str                       # one-line error message
    error_type: str                  # exception class name
    candid: Optional[int] = None     # candid, when it was decoded before failing
    source: Source                   # Kafka coordinate or file of the input
    time: float                      # when it was dead-lettered, unix seconds
    code_version: str                # stampflow version + git commit

    @classmethod
    def of(cls, dl: DeadLetter, code_version: str) -> "DeadLetterRecord":
        return cls(value=dl.value, stage=dl.stage, error=dl.error, error_type=dl.error_type, candid=dl.candid,
                   source=Source.of(dl.origin), time=dl.time, code_version=code_version)

    def record(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "value": self.value, "stage": self.stage,
                "error": self.error, "error_type": self.error_type, "candid": self.candid,
                "source": self.source.record(), "time": self.time, "code_version": self.code_version}


@lru_cache(maxsize=None)
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def validate_result(record: dict, version: int | str = RESULT_VERSION) -> ClassificationResult | ClassificationResultV1:
    """A decoded result record as its typed class; raises pydantic's ValidationError on a mismatch.

    v2 records validate as the v2.1 class: v2.1 only added a defaulted field.
    """
    classes = {"1": ClassificationResultV1, "2": ClassificationResult, "2.1": ClassificationResult}
    version = str(version)
    if version not in classes:
        raise ValueError(f"no result schema v{version}; known: {', '.join(f'v{v}' for v in classes)}")
    return _adapter(classes[version]).validate_python(record)


def validate_dead_letter(record: dict) -> DeadLetterRecord:
    """A decoded dead-letter record as its typed class; raises pydantic's ValidationError on a mismatch."""
    return _adapter(DeadLetterRecord).validate_python(record)


@lru_cache(maxsize=None)
def load_schema(kind: str, version: int | str | None = None) -> dict:
    """Parsed Avro schema for ``classification`` (default: the version the worker writes) or ``dead_letter``."""
    if version is None:
        version = RESULT_VERSION if kind == "classification" else DEAD_LETTER_VERSION
    path = SCHEMA_DIR / kind / f"v{version}.avsc"
    return fastavro.parse_schema(json.loads(path.read_text()))


def encode_schemaless(record: dict, kind: str = "classification", version: int | str | None = None) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(kind, version), record)
    return buf.getvalue()


def decode_schemaless(data: bytes, kind: str = "classification", version: int | str | None = None,
                      reader_version: int | str | None = None) -> dict:
    """Decode with the writer schema ``version``; ``reader_version`` resolves it to an older reader (a v1 client)."""
    writer = load_schema(kind, version)
    reader = load_schema(kind, reader_version) if reader_version is not None else writer
    return fastavro.schemaless_reader(io.BytesIO(data), writer, reader)
