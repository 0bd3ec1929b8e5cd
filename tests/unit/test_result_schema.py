"""The typed result and dead-letter records against their Avro contracts: fields, defaults, round trips."""
import dataclasses
import io
import typing

import fastavro
import pytest
from pydantic import ValidationError

from schemas.packet import DeadLetter, Origin
from schemas.results import (ClassificationResult, ClassificationResultV1, DeadLetterRecord, ModelPrediction,
                             ModelPredictionV1, Source, Truth, decode_schemaless, encode_schemaless, load_schema,
                             validate_dead_letter, validate_result)


def sample_result() -> dict:
    return {"schema_version": "2.1", "candid": 1105212445915010004, "objectId": "ZTF19acihgng", "survey": "ZTF",
            "source": {"topic": "ztf", "partition": 2, "offset": 41, "file": None, "index": None},
            "alert_time": 1574300000.5, "ingest_time": 1700000000.25, "classified_time": 1700000000.5,
            "flags": ["padded_stamp"],
            "predictions": [{"model": "stargal", "model_version": "1.0.0", "label": "galaxy",
                             "probabilities": {"star": 0.25, "galaxy": 0.75}, "uncertainty": 0.125,
                             "task": "classification", "values": {}, "correct": None,
                             "out_of_distribution": False}],
            "packet_id": None, "dataset": None, "truth": None,
            "code_version": "0.1.0+gabc", "config_hash": "0123456789abcdef"}


def sample_cutout_result() -> dict:
    rec = sample_result()
    rec.update({"candid": 8589603844187296113, "objectId": "J1234+5678", "survey": "FIRST", "flags": [],
                "packet_id": "J1234+5678", "dataset": "griese-first", "truth": {"label": "FRII", "values": {}},
                "predictions": [
                    {"model": "radio-first", "model_version": "1.0.0", "label": "FRII",
                     "probabilities": {"FRI": 0.1, "FRII": 0.8, "Compact": 0.05, "Bent": 0.05}, "uncertainty": 0.6,
                     "task": "classification", "values": {}, "correct": True, "out_of_distribution": True},
                    {"model": "spin", "model_version": "1.0.0", "label": "lambda_R=0.42", "probabilities": {},
                     "uncertainty": 0.0, "task": "regression", "values": {"lambda_R": 0.42}, "correct": None,
                     "out_of_distribution": False}]})
    return rec


def test_result_round_trip_avro_and_typed():
    rec = sample_result()
    result = validate_result(rec)
    assert isinstance(result, ClassificationResult) and isinstance(result.predictions[0], ModelPrediction)
    back = decode_schemaless(encode_schemaless(result.record()))
    assert validate_result(back) == result
    assert back == rec
    assert list(result.record()) == list(rec)  # schema order: the JSON-lines sink writes keys in this order


def _record_schema(avro_type) -> dict:
    """The record inside a field type (a record, an array of records, or a union with null)."""
    if isinstance(avro_type, list):
        (avro_type,) = [t for t in avro_type if t != "null"]
    return avro_type["items"] if avro_type["type"] == "array" else avro_type


def _check_mirror(cls, schema: dict) -> None:
    """Field names and order, defaults, and optionality of ``cls`` equal the Avro record ``schema``'s."""
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields] == [f["name"] for f in schema["fields"]], cls
    hints = typing.get_type_hints(cls)
    for f, avro in zip(fields, schema["fields"]):
        if "default" in avro:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert default == avro["default"], (cls, f.name)
        else:
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls, f.name)
        nullable = isinstance(avro["type"], list) and "null" in avro["type"]
        assert (type(None) in typing.get_args(hints[f.name])) == nullable, (cls, f.name)


def test_typed_records_mirror_avro_fields():
    schema = load_schema("classification")
    _check_mirror(ClassificationResult, schema)
    by_name = {f["name"]: f for f in schema["fields"]}
    _check_mirror(ModelPrediction, _record_schema(by_name["predictions"]["type"]))
    _check_mirror(Source, _record_schema(by_name["source"]["type"]))
    _check_mirror(Truth, _record_schema(by_name["truth"]["type"]))
    v1 = load_schema("classification", 1)
    _check_mirror(ClassificationResultV1, v1)
    _check_mirror(ModelPredictionV1, _record_schema({f["name"]: f for f in v1["fields"]}["predictions"]["type"]))
    _check_mirror(DeadLetterRecord, load_schema("dead_letter"))


def test_result_container_file_is_self_describing():
    buf = io.BytesIO()
    fastavro.writer(buf, load_schema("classification"), [sample_result()])
    buf.seek(0)
    assert list(fastavro.reader(buf))[0]["objectId"] == "ZTF19acihgng"


def test_bad_result_rejected():
    bad = sample_result()
    bad["predictions"][0]["probabilities"] = "nope"
    with pytest.raises(ValidationError):
        validate_result(bad)
    with pytest.raises(ValidationError):  # an unknown key is a schema mismatch, not something to drop
        validate_result({**sample_result(), "colour": "red"})
    with pytest.raises(ValidationError):
        validate_result({k: v for k, v in sample_result().items() if k != "candid"})
    with pytest.raises((ValueError, TypeError)):
        encode_schemaless({**sample_result(), "candid": "x"})


def test_cutout_result_round_trips():
    rec = sample_cutout_result()
    assert decode_schemaless(encode_schemaless(validate_result(rec).record())) == rec


def test_v1_and_v2_readers_keep_working_on_v2_1_results():
    """Consumers holding the v1 or v2 schema resolve v2.1 data (Avro schema resolution drops the new fields)."""
    rec = sample_cutout_result()
    data = encode_schemaless(rec)  # written with the current schema, v2.1
    v2 = decode_schemaless(data, reader_version=2)
    assert list(v2) == [f["name"] for f in load_schema("classification", 2)["fields"]]
    assert "out_of_distribution" not in v2["predictions"][0]
    assert v2["predictions"][0]["correct"] is True and v2["truth"] == rec["truth"]
    assert decode_schemaless(data)["predictions"][0]["out_of_distribution"] is True
    # and a v2.1 reader resolves v2 data: the new flag takes its default
    v2_rec = {**v2, "schema_version": "2"}
    up = decode_schemaless(encode_schemaless(v2_rec, version=2), version=2, reader_version="2.1")
    assert up["predictions"][0]["out_of_distribution"] is False
    assert isinstance(validate_result(v2_rec, version=2), ClassificationResult)
    old = decode_schemaless(data, reader_version=1)
    v1_fields = [f["name"] for f in load_schema("classification", 1)["fields"]]
    assert list(old) == v1_fields
    assert old["predictions"][0] == {k: rec["predictions"][0][k] for k in
                                     ("model", "model_version", "label", "probabilities", "uncertainty")}
    assert isinstance(validate_result(old, version=1), ClassificationResultV1)
    with pytest.raises(ValidationError):  # and a v2 record is not a v1 one
        validate_result(rec, version=1)


def test_dead_letter_record_from_a_dead_letter():
    dl = DeadLetter(b"\x00raw", Origin(topic="ztf", partition=1, offset=9), "decode", "bad magic", "DecodeError",
                    time=1700000000.5, candid=None)
    rec = DeadLetterRecord.of(dl, "0.1.0+gabc").record()
    assert rec == {"schema_version": "1", "value": b"\x00raw", "stage": "decode", "error": "bad magic",
                   "error_type": "DecodeError", "candid": None,
                   "source": {"topic": "ztf", "partition": 1, "offset": 9, "file": None, "index": None},
                   "time": 1700000000.5, "code_version": "0.1.0+gabc"}
    assert list(rec) == [f["name"] for f in load_schema("dead_letter")["fields"]]
    back = decode_schemaless(encode_schemaless(rec, "dead_letter"), "dead_letter")
    assert back == rec and validate_dead_letter(back) == DeadLetterRecord.of(dl, "0.1.0+gabc")
