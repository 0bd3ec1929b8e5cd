import io

import fastavro
import pytest
from pydantic import ValidationError

from schemas.results import (ClassificationResult, ClassificationResultV1, DeadLetterRecord, decode_schemaless,
                             encode_schemaless, load_schema)


def sample_result() -> dict:
    return {"schema_version": "2", "candid": 1105212445915010004, "objectId": "ZTF19acihgng", "survey": "ZTF",
            "source": {"topic": "ztf", "partition": 2, "offset": 41, "file": None, "index": None},
            "alert_time": 1574300000.5, "ingest_time": 1700000000.25, "classified_time": 1700000000.5,
            "flags": ["padded_stamp"],
            "predictions": [{"model": "stargal", "model_version": "1.0.0", "label": "galaxy",
                             "probabilities": {"star": 0.25, "galaxy": 0.75}, "uncertainty": 0.125,
                             "task": "classification", "values": {}, "correct": None}],
            "packet_id": None, "dataset": None, "truth": None,
            "code_version": "0.1.0+gabc", "config_hash": "0123456789abcdef"}


def sample_cutout_result() -> dict:
    rec = sample_result()
    rec.update({"candid": 8589603844187296113, "objectId": "J1234+5678", "survey": "FIRST", "flags": [],
                "packet_id": "J1234+5678", "dataset": "griese-first", "truth": {"label": "FRII", "values": {}},
                "predictions": [
                    {"model": "radio-first", "model_version": "1.0.0", "label": "FRII",
                     "probabilities": {"FRI": 0.1, "FRII": 0.8, "Compact": 0.05, "Bent": 0.05}, "uncertainty": 0.6,
                     "task": "classification", "values": {}, "correct": True},
                    {"model": "spin", "model_version": "1.0.0", "label": "lambda_R=0.42", "probabilities": {},
                     "uncertainty": 0.0, "task": "regression", "values": {"lambda_R": 0.42}, "correct": None}]})
    return rec


def test_result_round_trip_avro_and_pydantic():
    rec = sample_result()
    model = ClassificationResult.model_validate(rec)
    back = decode_schemaless(encode_schemaless(model.model_dump()))
    assert ClassificationResult.model_validate(back) == model
    assert back == rec


def test_pydantic_fields_mirror_avro_fields():
    schema = load_schema("classification")
    avro_fields = [f["name"] for f in schema["fields"]]
    assert avro_fields == list(ClassificationResult.model_fields)
    pred_schema = schema["fields"][avro_fields.index("predictions")]["type"]["items"]
    from schemas.results import ModelPrediction, Source
    assert [f["name"] for f in pred_schema["fields"]] == list(ModelPrediction.model_fields)
    src = schema["fields"][avro_fields.index("source")]["type"]
    assert [f["name"] for f in src["fields"]] == list(Source.model_fields)
    dl = load_schema("dead_letter")
    assert [f["name"] for f in dl["fields"]] == list(DeadLetterRecord.model_fields)


def test_result_container_file_is_self_describing():
    buf = io.BytesIO()
    fastavro.writer(buf, load_schema("classification"), [sample_result()])
    buf.seek(0)
    assert list(fastavro.reader(buf))[0]["objectId"] == "ZTF19acihgng"


def test_bad_result_rejected():
    bad = sample_result()
    bad["predictions"][0]["probabilities"] = "nope"
    with pytest.raises(ValidationError):
        ClassificationResult.model_validate(bad)
    with pytest.raises((ValueError, TypeError)):
        encode_schemaless({**sample_result(), "candid": "x"})


def test_cutout_result_round_trips():
    rec = sample_cutout_result()
    assert decode_schemaless(encode_schemaless(ClassificationResult.model_validate(rec).model_dump())) == rec


def test_v1_readers_keep_working_on_v2_results():
    """A consumer holding the v1 schema resolves v2 data (Avro schema resolution drops the new fields)."""
    rec = sample_cutout_result()
    old = decode_schemaless(encode_schemaless(rec), version=2, reader_version=1)
    v1_fields = [f["name"] for f in load_schema("classification", 1)["fields"]]
    assert list(old) == v1_fields
    assert old["predictions"][0] == {k: rec["predictions"][0][k] for k in
                                     ("model", "model_version", "label", "probabilities", "uncertainty")}
    ClassificationResultV1.model_validate(old)
    # and the v1 pydantic mirror still matches the v1 schema
    assert v1_fields == list(ClassificationResultV1.model_fields)
