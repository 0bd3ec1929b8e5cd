import io

import fastavro
import pytest
from pydantic import ValidationError

from schemas.results import (ClassificationResult, DeadLetterRecord, decode_schemaless, encode_schemaless,
                             load_schema)


def sample_result() -> dict:
    return {"schema_version": "1", "candid": 1105212445915010004, "objectId": "ZTF19acihgng", "survey": "ZTF",
            "source": {"topic": "ztf", "partition": 2, "offset": 41, "file": None, "index": None},
            "alert_time": 1574300000.5, "ingest_time": 1700000000.25, "classified_time": 1700000000.5,
            "flags": ["padded_stamp"],
            "predictions": [{"model": "stargal", "model_version": "1.0.0", "label": "galaxy",
                             "probabilities": {"star": 0.25, "galaxy": 0.75}, "uncertainty": 0.125}],
            "code_version": "0.1.0+gabc", "config_hash": "0123456789abcdef"}


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
