"""`stream.results.encode_result`: the generated result writer writes fastavro's bytes, and leaves to fastavro
(same bytes, or fastavro's error) every value it does not take exactly."""
from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.results import decode_schemaless, encode_schemaless, validate_result
from stream.results import _result_writer, encode_result
from tests.unit.test_result_schema import sample_cutout_result, sample_result


def _typed(rec: dict):
    return validate_result(rec)


@pytest.mark.parametrize("rec", [sample_result(), sample_cutout_result()], ids=["ztf", "cutout-regression"])
def test_generated_writer_writes_fastavros_bytes(rec):
    assert _result_writer() is not None  # the generator takes the result schema: this is the fast path
    result = _typed(rec)
    assert encode_result(result) == encode_schemaless(result.record())
    assert decode_schemaless(encode_result(result)) == result.record()


def test_every_optional_field_and_edge_value():
    rec = sample_result()
    rec.update(alert_time=None, flags=[], predictions=[], truth={"label": None, "values": {"z": -0.0}},
               candid=-(1 << 63), source={"topic": None, "partition": None, "offset": None, "file": "a.avro",
                                          "index": 0})
    result = _typed(rec)
    assert encode_result(result) == encode_schemaless(result.record())
    rec["ingest_time"] = math.inf
    result = _typed(rec)
    assert encode_result(result) == encode_schemaless(result.record())


def test_values_the_generated_writer_does_not_take_go_to_fastavro():
    result = _typed(sample_result())
    result.alert_time = np.float64(1574300000.5)  # not a Python float: the generated code refuses it
    assert encode_result(result) == encode_schemaless(result.record())
    result.candid = "not a long"
    with pytest.raises(Exception) as generated:
        encode_result(result)
    with pytest.raises(Exception) as reference:
        encode_schemaless(result.record())
    assert type(generated.value) is type(reference.value)
