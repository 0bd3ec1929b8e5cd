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


class ModelPrediction(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str
    model_version: str
    label: str
    probabilities: dict[str, float]
    uncertainty: float


class ClassificationResult(BaseModel):
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
    predictions: list[ModelPrediction] = Field(default_factory=list)
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
def load_schema(kind: str, version: int = 1) -> dict:
    """Parsed Avro schema for ``classification`` or ``dead_letter`` at ``version``."""
    path = SCHEMA_DIR / kind / f"v{version}.avsc"
    return fastavro.parse_schema(json.loads(path.read_text()))


def encode_schemaless(record: dict, kind: str = "classification", version: int = 1) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(kind, version), record)
    return buf.getvalue()


def decode_schemaless(data: bytes, kind: str = "classification", version: int = 1) -> dict:
    schema = load_schema(kind, version)
    return fastavro.schemaless_reader(io.BytesIO(data), schema, schema)
