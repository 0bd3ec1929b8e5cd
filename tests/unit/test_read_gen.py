"""The generated reader's block skip of history arrays (`read_gen.RepeatMatch`): whole blocks of rows in a few
regex matches must land exactly where the row-by-row walk lands, fall back to it when a row is not expressible,
and never accept bad bytes."""
from __future__ import annotations

import io
import random

import fastavro
import pytest

from stream.decode.read_gen import RepeatMatch, build_reader

ROW = {"type": "record", "name": "Row", "fields": [
    {"name": "id", "type": "long"},
    {"name": "flux", "type": ["null", "float"]},
    {"name": "mjd", "type": ["null", "double"]},
    {"name": "band", "type": ["null", "string"]},
    {"name": "ok", "type": "boolean"},
]}
ALERT = {"type": "record", "name": "Alert", "fields": [
    {"name": "alertId", "type": "long"},
    {"name": "history", "type": ["null", {"type": "array", "items": ROW}]},
    {"name": "after", "type": "string"},
]}
SPEC = {"alertId": None, "after": None}  # the history is skipped, the field after it must be found


def _rows(n: int, rng: random.Random, long_band: int | None = None) -> list[dict]:
    rows = []
    for i in range(n):
        band = None if rng.random() < 0.3 else rng.choice("ugrizy") * rng.randrange(1, 4)
        if i == long_band:
            band = "x" * 300  # a string over 255 bytes: not expressible by the row regex
        rows.append({"id": rng.randrange(-2**40, 2**40), "flux": None if rng.random() < 0.4 else rng.random(),
                     "mjd": None if rng.random() < 0.2 else 60000 + rng.random(), "band": band,
                     "ok": rng.random() < 0.5})
    return rows


def _encode(alert: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(ALERT), alert)
    return buf.getvalue()


@pytest.fixture(scope="module")
def reader():
    named: dict = {}
    writer = fastavro.parse_schema(ALERT, named_schemas=named)
    read = build_reader(named, writer, SPEC)
    assert any(isinstance(v, RepeatMatch) for v in read.__globals__.values()), "no block matcher was generated"
    return read


@pytest.mark.parametrize("n", [0, 1, 2, 3, 255, 256, 257, 700])
def test_block_skip_lands_after_the_history(reader, n):
    rng = random.Random(n)
    value = _encode({"alertId": 7, "history": _rows(n, rng), "after": "here"})
    rec, end = reader(value, 0)
    assert rec == {"alertId": 7, "after": "here"}
    assert end == len(value)


def test_history_of_nullable_rows_is_block_skipped():
    """Fink's Spark writer makes each history row nullable: ``{"items": ["null", Row]}``."""
    schema = {**ALERT, "fields": [ALERT["fields"][0],
                                  {"name": "history", "type": ["null", {"type": "array", "items": ["null", ROW]}]},
                                  ALERT["fields"][2]]}
    named: dict = {}
    read = build_reader(named, fastavro.parse_schema(schema, named_schemas=named), SPEC)
    assert any(isinstance(v, RepeatMatch) for v in read.__globals__.values())
    rows = [None if i % 7 == 0 else r for i, r in enumerate(_rows(300, random.Random(5)))]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), {"alertId": 3, "history": rows, "after": "end"})
    assert read(buf.getvalue(), 0) == ({"alertId": 3, "after": "end"}, len(buf.getvalue()))


def test_inexpressible_row_falls_back_to_the_row_walk(reader):
    rows = _rows(300, random.Random(1), long_band=280)
    value = _encode({"alertId": 9, "history": rows, "after": "tail"})
    assert reader(value, 0) == ({"alertId": 9, "after": "tail"}, len(value))


def test_repeat_match_counts_and_failure():
    item = b"[\\x80-\\xff]{0,9}[\\x00-\\x7f]"  # one varint
    skip = RepeatMatch(item)
    data = bytes([0x81, 0x01] * 300 + [0x05])
    assert skip(data, 0, 300) == 2 * 288  # 256 + 2 x 16 rows; the caller walks the last 12
    assert skip(data, 0, 15) == 0  # a short history compiles and matches nothing
    assert skip(data, 0, 0) == 0
    assert skip(data, 0, 320) == -1  # 320 rows, 301 there: the caller walks them and raises
    assert set(skip.matchers) == {16, 256}


def test_bad_union_byte_inside_the_history_is_detected(reader):
    value = bytearray(_encode({"alertId": 1, "history": _rows(50, random.Random(3)), "after": "x"}))
    # the history's first row starts after alertId (1 byte), the union index (1) and the block count (1)
    row0 = 3
    # the 'flux' union index of row 0 sits right after its id varint
    i = row0
    while value[i] & 0x80:
        i += 1
    value[i + 1] = 0x07  # not a branch of ["null", "float"]
    with pytest.raises((IndexError, ValueError)):
        rec, end = reader(bytes(value), 0)
        if end != len(value):
            raise ValueError("reader did not end at the message's end")
