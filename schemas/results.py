"""Pydantic models mirroring the Avro result and dead-letter schemas, and the Avro (de)serialisers.

The Avro files under ``schemas/`` are the contract; these models are checked against them by a round-trip test.
"""
from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

import fastavro
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_DIR = Path(__file__).resolve().parent


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: Optional[str] = None
    partition: Optional[int] = None
    offset: Optional[int] = None
    file: Optional[str] = None
    index: Optional[int] = None


#: The result schema version the worker writes (v2 adds cutout-packet fields; v1 readers resolve it).
RESULT_VERSION = 2


class ModelPredictionV1(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str
    model_version: str
    label: str
    probabilities: dict[str, float]
    uncertainty: float


class ModelPrediction(ModelPredictionV1):
    task: str = "classification"
    values: dict[str, float] = Field(default_factory=dict)
    correct: Optional[bool] = None


class Truth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Optional[str] = None
    values: dict[str, float] = Field(default_factory=dict)


class ClassificationResultV1(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_version: str = "1"
    candid: int
    objectId: str
    survey: str
    source: Source
    alert_time: Optional[float] = None
    ingest_time: float
    classified_time: float
    flags: list[str] = Field(default_factory=list)
    predictions: list[ModelPredictionV1] = Field(default_factory=list)
    code_version: str
    config_hash: str


class ClassificationResult(BaseModel):
    """Schema v2 (schemas/classification/v2.avsc)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_version: str = "2"
    candid: int
    objectId: str
    survey: str
    source: Source
    alert_time: Optional[float] = None
    ingest_time: float
    classified_time: float
    flags: list[str] = Field(default_factory=list)
    predictions: list[ModelPrediction] = Field(default_factory=list)
    packet_id: Optional[str] = None
    dataset: Optional[str] = None
    truth: Optional[Truth] = None
    code_version: str
    config_hash: str


class DeadLetterRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: str = "1"
    value: bytes
    stage: str
    error: str
    error_type: str
    candid: Optional[int] = None
    source: Source
    time: float
    code_version: str


@lru_cache(maxsize=None)
def load_schema(kind: str, version: int | None = None) -> dict:
    """Parsed Avro schema for ``classification`` (default: the version the worker writes) or ``dead_letter``."""
    if version is None:
        version = RESULT_VERSION if kind == "classification" else 1
    path = SCHEMA_DIR / kind / f"v{version}.avsc"
    return fastavro.parse_schema(json.loads(path.read_text()))


def encode_schemaless(record: dict, kind: str = "classification", version: int | None = None) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(kind, version), record)
    return buf.getvalue()


def decode_schemaless(data: bytes, kind: str = "classification", version: int | None = None,
                      reader_version: int | None = None) -> dict:
    """Decode with the writer schema ``version``; ``reader_version`` resolves it to an older reader (a v1 client)."""
    writer = load_schema(kind, version)
    reader = load_schema(kind, reader_version) if reader_version is not None else writer
    return fastavro.schemaless_reader(io.BytesIO(data), writer, reader)
