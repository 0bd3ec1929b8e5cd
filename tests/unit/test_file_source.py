"""FileSource over the real shared data: every alert decodes or is dead-lettered as expected."""
from __future__ import annotations

import decimal
import gzip
import io
import tarfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.errors import StampflowError
from schemas.packet import DeadLetter, Framing, RawMessage, StampKind
from stream.decode import Decoder, parse_container
from stream.decode.arrow import (RowWriter, arrow_to_avro_schema, avro_ready_arrow_schema, parquet_avro_schema,
                                 rename_row)
from stream.file_source import SKIPPED_PATHS_SHOWN, FileSource

# file (relative to the shared data root) -> alerts that decode to packets
EXPECTED_OK = {
    "ztf_alerts/ampel/recent_alerts.tar.gz": 22,
    "ztf_alerts/ampel/ztf_public_20180819_mod1000.tar.gz": 30,
    "ztf_alerts/ampel/schema_3.2.avro": 1,
    "ztf_alerts/ampel/schema_3.3.avro": 1,
    **{f"ztf_alerts/ampel/ztf_public_20180601/{n}.avro": 1 for n in (
        "516171791415015025", "516171795115010001", "516377976015010010", "516401800615015114",
        "516401801615015023", "516401806015010001", "516442333515015024", "516442336115015015",
        "516442805715015010", "516476001515015009")},
    "ztf_alerts/fink-client/ZTF19acihgng.avro": 1,
    "ztf_alerts/fink-client/ZTF19acxxwrs.avro": 1,
    "ztf_alerts/fink-client/ZTF19acyfkzd.avro": 1,
    "ztf_alerts/fink-client/ZTF19acyjzeo.avro": 1,
    "ztf_alerts/fink-client/avro_multi_alerts.avro": 11,
    "ztf_alerts/fink-client/avro_multi_alerts_other.avro": 3,
    "ztf_alerts/fink-client/ztf/part-3-305711.avro": 31,
    "ztf_alerts/fink-science/alerts.parquet": 51,
    "ztf_alerts/fink-science/image_classification_example.parquet": 4,
    "ztf_alerts/fink-science/part-0-0-435829.parquet": 72,
    "ztf_alerts/fink-science/part-00002-bdab8e46-89c4-4ac1-8603-facd71833e8a-c000.snappy.parquet": 67,
    "ztf_alerts/fink-science/part-00003-bdab8e46-89c4-4ac1-8603-facd71833e8a-c000.snappy.parquet": 57,
    "ztf_alerts/ztf-avro-alert/2019_01_10_739260766315010006.avro": 1,
    "ztf_alerts/ztf-avro-alert/472263571115115000.avro": 1,
    "lsst_alerts/fink-client/alert_mjd60674.0512_obj747_src1494043.avro.gz": 1,
    "lsst_alerts/fink-client/part-2-918301.avro": 7,
    "lsst_alerts/lsst-alert_packet/v11_0_fakeAlert.avro": 1,
}
CORRUPT = {f"ztf_alerts/ampel/ztf_public_20180601_corrupt/{n}.avro" for n in (
    "516401801315010009", "516434762915010006", "516442330015015017", "516442805615015004", "516476004815015005")}
JPEG = "ztf_alerts/ampel/121540793515135000.avro"


@pytest.fixture(scope="module")
def everything(data_dir: Path):
    source = FileSource([data_dir / "ztf_alerts", data_dir / "lsst_alerts"])
    return source, list(source)


def _rel(origin_file: str, root: Path) -> str:
    return str(Path(origin_file.split(":")[0]).relative_to(root))


def test_every_shared_alert_decodes_or_is_dead_lettered(data_dir, everything, capsys):
    source, items = everything
    decoder = Decoder()
    ok, read_dead, decode_dead = Counter(), Counter(), Counter()
    for item in items:
        rel = _rel(item.origin.file, data_dir)
        if isinstance(item, DeadLetter):
            read_dead[rel] += 1
            continue
        result = decoder.decode_or_dead_letter(item)
        if isinstance(result, DeadLetter):
            decode_dead[rel] += 1
            assert result.error_type == "UnsupportedPacket" and result.value == item.value
        else:
            ok[rel] += 1
            assert result.origin == item.origin
    assert dict(ok) == EXPECTED_OK
    assert set(read_dead) == CORRUPT and all(v == 1 for v in read_dead.values())
    assert dict(decode_dead) == {JPEG: 1}
    assert source.stats["messages"] == sum(EXPECTED_OK.values()) + 1 == 376
    assert source.stats["dead_letters"] == 5
    per_source = defaultdict(lambda: [0, 0])
    for rel, n in ok.items():
        per_source[rel.split("/")[1] if rel.startswith("ztf") else "lsst/" + rel.split("/")[1]][0] += n
    for rel, n in (read_dead + decode_dead).items():
        per_source[rel.split("/")[1]][1] += n
    with capsys.disabled():
        print("\n[file source] decoded / dead-lettered per source: "
              + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(per_source.items())))


def test_skipped_files_are_counted(data_dir, everything):
    source, _ = everything
    skipped = {Path(p).name for p in source.skipped}
    assert {"usage_triplets.npy", "usage_candidates.csv", "alert.avsc", "ztf_science.fits.gz"} <= skipped
    assert source.stats["skipped"] == len(source.skipped) == 12


def test_order_is_deterministic_and_origins_are_precise(data_dir, everything):
    _, items = everything
    again = list(FileSource([data_dir / "ztf_alerts", data_dir / "lsst_alerts"]))
    assert [i.origin for i in items] == [i.origin for i in again]
    origins = [i.origin for i in items]
    assert len(set(origins)) == len(origins)
    tar_items = [i for i in items if ".tar.gz:" in i.origin.file]
    assert len(tar_items) == 52 and all(i.origin.index == 0 for i in tar_items)
    assert all(i.origin.file.split(":")[1].endswith(".avro") for i in tar_items)
    multi = [i.origin.index for i in items if i.origin.file.endswith("avro_multi_alerts.avro")]
    assert multi == list(range(11))


def test_corrupt_files_are_dead_letters_with_the_original_bytes(data_dir, everything):
    _, items = everything
    dead = [i for i in items if isinstance(i, DeadLetter)]
    assert len(dead) == 5
    for d in dead:
        assert d.stage == "read" and "truncated or corrupt Avro container" in d.error
        assert d.value == Path(d.origin.file).read_bytes()


def test_split_messages_are_valid_single_alert_containers(data_dir):
    path = data_dir / "ztf_alerts" / "fink-client" / "ztf" / "part-3-305711.avro"
    originals = list(fastavro.reader(open(path, "rb")))
    messages = list(FileSource(path))
    assert len(messages) == len(originals) == 31
    for m, ref in zip(messages, originals):
        assert isinstance(m, RawMessage) and m.framing is Framing.ZTF and m.record is not None
        assert parse_container(m.value).count == 1
        # same writer schema, full record intact (repr: NaN-safe comparison)
        assert repr(next(fastavro.reader(io.BytesIO(m.value)))) == repr(ref)
        assert m.record["candid"] == ref["candid"] and m.record["cutoutScience"] == ref["cutoutScience"]


def test_parquet_rows_carry_record_and_replayable_avro(data_dir):
    path = data_dir / "ztf_alerts" / "fink-science" / "alerts.parquet"
    table = pq.read_table(path)
    rows = table.cast(avro_ready_arrow_schema(table.schema)).to_pylist()
    messages = list(FileSource(path))
    assert len(messages) == table.num_rows == 51
    decoder = Decoder()
    for m, row in zip(messages, rows):
        assert repr(m.record) == repr(row)
        back = next(fastavro.reader(io.BytesIO(m.value)))
        assert repr(back) == repr(row)  # the inferred Avro schema round-trips the row
        from_record = decoder.decode(m)
        from_bytes = decoder.decode(RawMessage(value=m.value, origin=m.origin))
        assert (from_record.candid, from_record.object_id, from_record.alert_time, from_record.schema_version) == \
            (from_bytes.candid, from_bytes.object_id, from_bytes.alert_time, from_bytes.schema_version)
        assert {k: s.raw for k, s in from_record.stamps.items()} == {k: s.raw for k, s in from_bytes.stamps.items()}
        assert set(from_record.stamps) == {StampKind.SCIENCE, StampKind.TEMPLATE, StampKind.DIFFERENCE}
    labelled = list(FileSource(data_dir / "ztf_alerts" / "fink-science" / "image_classification_example.parquet"))
    packets = [decoder.decode(m) for m in labelled]
    assert all(set(p.stamps) == {StampKind.SCIENCE} and p.extra.get("labels") for p in packets)


def test_arrow_to_avro_mapper_roundtrip():
    schema = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("ts", pa.timestamp("ns")),
        pa.field("flag", pa.bool_()),
        pa.field("small", pa.int16()),
        pa.field("f", pa.float32()),
        pa.field("name", pa.large_string()),
        pa.field("blob", pa.binary()),
        pa.field("2MASS name", pa.string()),  # not a valid Avro name
        pa.field("hist", pa.list_(pa.struct([pa.field("jd", pa.float64()), pa.field("x-y", pa.int32())]))),
        pa.field("tags", pa.map_(pa.string(), pa.float64())),
        pa.field("cut", pa.struct([pa.field("fileName", pa.string()), pa.field("stampData", pa.binary())])),
    ])
    table = pa.table({
        "id": [1, 2], "ts": pa.array([1_700_000_000_000_000_000, None], pa.timestamp("ns")),
        "flag": [True, None], "small": [3, -4], "f": [1.5, None], "name": ["a", None], "blob": [b"\x00\x01", None],
        "2MASS name": ["J1", None], "hist": [[{"jd": 1.0, "x-y": 2}], None],
        "tags": pa.array([[("a", 1.0)], None], pa.map_(pa.string(), pa.float64())),
        "cut": [{"fileName": "f.fits.gz", "stampData": b"\x1f\x8b"}, None],
    }, schema=schema)
    ready = avro_ready_arrow_schema(schema)
    avro_schema, plan = arrow_to_avro_schema(ready, name="t")
    assert plan is not None
    parsed = fastavro.parse_schema(avro_schema)
    rows = table.cast(ready).to_pylist()
    buf = io.BytesIO()
    fastavro.writer(buf, parsed, [rename_row(r, plan) for r in rows])
    back = list(fastavro.reader(io.BytesIO(buf.getvalue())))
    assert back[0]["ts"] == 1_700_000_000_000_000_000 and back[1]["ts"] is None
    assert back[0]["_2MASS_name"] == "J1" and back[0]["hist"] == [{"jd": 1.0, "x_y": 2}]
    assert back[0]["tags"] == {"a": 1.0} and back[1]["tags"] is None
    assert back[0]["cut"] == {"fileName": "f.fits.gz", "stampData": b"\x1f\x8b"}
    fields = {f["name"]: f for f in avro_schema["fields"]}
    assert fields["id"]["type"] == "long" and fields["small"]["type"] == ["null", "int"]
    assert fields["_2MASS_name"]["arrowName"] == "2MASS name"


def test_missing_path_fails_up_front(tmp_path):
    with pytest.raises(StampflowError, match="no such file or directory: .*nope"):
        FileSource([tmp_path, tmp_path / "nope"])


def test_explicit_unknown_extension_is_dead_lettered(tmp_path, fixtures_dir):
    odd = tmp_path / "alert.bin"
    odd.write_bytes(b"whatever")
    items = list(FileSource([odd, fixtures_dir / "alerts" / "ZTF19acyjzeo.avro"]))
    assert isinstance(items[0], DeadLetter) and "unknown file type" in items[0].error
    assert isinstance(items[1], RawMessage)


def test_gz_tar_and_bad_inputs(tmp_path, fixtures_dir):
    src = fixtures_dir / "alerts" / "ZTF19acyjzeo.avro"
    value = src.read_bytes()
    (tmp_path / "a.avro.gz").write_bytes(gzip.compress(value))
    (tmp_path / "b.avro.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    with tarfile.open(tmp_path / "night.tgz", "w:gz") as tf:
        tf.add(src, arcname="night/ZTF19acyjzeo.avro")
        tf.add(fixtures_dir / "LICENSES.md", arcname="night/README.md")
        tf.add(fixtures_dir / "alerts" / "ZTF19acxxwrs.avro", arcname="night/ZTF19acxxwrs.avro")
    full = (tmp_path / "night.tgz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(full[: len(full) // 2])
    (tmp_path / "notes.txt").write_text("skipped")
    source = FileSource(tmp_path)
    items = list(source)
    by_file = defaultdict(list)
    for i in items:
        by_file[Path(i.origin.file.split(":")[0]).name].append(i)
    assert [type(i) for i in by_file["a.avro.gz"]] == [RawMessage] and by_file["a.avro.gz"][0].value == value
    assert isinstance(by_file["b.avro.gz"][0], DeadLetter) and "gzip" in by_file["b.avro.gz"][0].error
    night = by_file["night.tgz"]
    assert [i.origin.file.split(":", 1)[1] for i in night] == ["night/ZTF19acyjzeo.avro", "night/ZTF19acxxwrs.avro"]
    cut = by_file["cut.tar.gz"]
    assert isinstance(cut[-1], DeadLetter) and "tar archive unreadable" in cut[-1].error
    assert all(isinstance(i, RawMessage) for i in cut[:-1])
    assert {str(tmp_path / "notes.txt"), f"{tmp_path / 'night.tgz'}:night/README.md"} <= set(source.skipped)
    assert source.stats["skipped"] == len(source.skipped)  # (+ the README in cut.tar.gz, if before the cut)
    assert source.count() >= source.stats["messages"]


def test_count_matches_iteration(data_dir, everything):
    source, items = everything
    assert FileSource([data_dir / "ztf_alerts", data_dir / "lsst_alerts"]).count() == len(items) == 381


def test_skipped_files_are_exposed(data_dir):
    """ALeRCE's directory holds 5 loose .fits.gz stamps: nothing to read, all 5 skipped, and said so."""
    alerce = data_dir / "ztf_alerts" / "alerce"
    source = FileSource(alerce)
    assert source.stats["skipped"] == 0 and source.skipped_paths == []  # before iterating: keys present, zero
    assert set(source.stats) >= {"files", "messages", "dead_letters", "skipped", "empty"}
    assert list(source) == []
    expected = sorted(str(p) for p in alerce.rglob("*.fits.gz"))
    assert len(expected) == 5
    assert source.stats["skipped"] == 5 and source.stats["files"] == 0 and source.stats["messages"] == 0
    assert source.skipped_paths == expected == source.skipped
    assert source.count() == 0
    assert source.stats["skipped"] == 5 and source.skipped_paths == expected  # count() leaves them alone
    assert list(source) == [] and source.stats["skipped"] == 5  # a second run starts from zero


def test_skipped_paths_survive_count_and_are_capped(tmp_path, fixtures_dir):
    for i in range(SKIPPED_PATHS_SHOWN + 5):
        (tmp_path / f"note{i:02d}.txt").write_text("x")
    with tarfile.open(tmp_path / "night.tar", "w") as tf:
        tf.add(fixtures_dir / "alerts" / "ZTF19acyjzeo.avro", arcname="night/a.avro")
        tf.add(fixtures_dir / "LICENSES.md", arcname="night/README.md")
    source = FileSource(tmp_path)
    items = list(source)
    assert [type(i) for i in items] == [RawMessage]
    total = SKIPPED_PATHS_SHOWN + 5 + 1  # the loose files and the archive's README
    assert source.stats["skipped"] == total == len(source.skipped)
    assert len(source.skipped_paths) == SKIPPED_PATHS_SHOWN == 20
    assert source.skipped_paths == source.skipped[:20] and source.skipped_paths[0].endswith("note00.txt")
    assert source.skipped[-1].endswith("night.tar:night/README.md")  # archive members: as the archive is read
    source.count()  # e.g. a progress bar sized after the run: the archive member stays counted and listed
    assert source.stats["skipped"] == total == len(source.skipped)


def _parquet_rows(path: Path):
    pf = pq.ParquetFile(path)
    target, schema, plan = parquet_avro_schema(pf.schema_arrow, path)
    return schema, plan, pf.read().cast(target).to_pylist()


def _fastavro_bytes(parsed, row, plan) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, rename_row(row, plan) if plan else row)
    return buf.getvalue()


def _canon(value):
    """Comparable form: dicts by sorted key (renaming moves keys), floats by repr (NaN)."""
    if isinstance(value, dict):
        return sorted((k, _canon(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return repr(value)


def test_parquet_row_writer_matches_fastavro_on_every_shared_row(data_dir):
    paths = sorted((data_dir / "ztf_alerts" / "fink-science").glob("*.parquet"))
    assert len(paths) == 5
    rows_seen = 0
    for path in paths:
        schema, plan, rows = _parquet_rows(path)
        writer = RowWriter(schema, plan)
        assert writer.fast is not None, path.name  # the generated writer handles Fink's inferred schemas
        parsed = fastavro.parse_schema(schema)
        for row in rows:
            assert writer.encode(row) == _fastavro_bytes(parsed, row, plan), path.name
        assert writer.fallbacks == 0
        rows_seen += len(rows)
        # and what the source yields: one valid single-record container per row, header shared per file
        messages = list(FileSource(path))
        assert len(messages) == len(rows)
        headers = {m.value[:parse_container(m.value).header_len + 16] for m in messages}
        assert len(headers) == 1
        for m, row in zip(messages[:5], rows):
            back = next(fastavro.reader(io.BytesIO(m.value)))
            assert _canon(back) == _canon(rename_row(row, plan) if plan else row)
    assert rows_seen == 251


def test_row_writer_edge_types_and_fallback():
    schema = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("flag", pa.bool_()),
        pa.field("small", pa.int8()),
        pa.field("f", pa.float32()),
        pa.field("d", pa.float64()),
        pa.field("u64", pa.uint64()),
        pa.field("name", pa.string()),
        pa.field("blob", pa.binary()),
        pa.field("fixed", pa.binary(3)),
        pa.field("2MASS name", pa.string()),
        pa.field("hist", pa.list_(pa.struct([pa.field("jd", pa.float64()), pa.field("x-y", pa.int32())]))),
        pa.field("tags", pa.map_(pa.string(), pa.float64())),
        pa.field("nulls", pa.null()),
    ])
    big = -(1 << 62) - 12345
    table = pa.table({
        "id": [1, big, 0], "flag": [True, False, None], "small": [-64, 63, None], "f": [1.5, float("nan"), None],
        "d": [float("-inf"), -0.0, None], "u64": [0, (1 << 63) - 1, None], "name": ["é✓", "", None],
        "blob": [b"\x00\x01", b"", None], "fixed": [b"abc", b"\x00\x00\x00", None],
        "2MASS name": ["J1", None, None], "hist": [[{"jd": 1.0, "x-y": -2}, None], [], None],
        "tags": pa.array([[("a", 1.0), ("b", None)], [], None], pa.map_(pa.string(), pa.float64())),
        "nulls": [None, None, None],
    }, schema=schema)
    ready = avro_ready_arrow_schema(schema)
    avro_schema, plan = arrow_to_avro_schema(ready, name="t")
    parsed = fastavro.parse_schema(avro_schema)
    writer = RowWriter(avro_schema, plan)
    assert writer.fast is not None
    for row in table.cast(ready).to_pylist():
        assert writer.fast(row) == _fastavro_bytes(parsed, row, plan)
    assert writer.fallbacks == 0
    # a value the generated writer does not take as is (an int where a double is declared): fastavro's bytes
    odd = dict(table.cast(ready).to_pylist()[0], d=3)
    assert writer.encode(odd) == _fastavro_bytes(parsed, odd, plan) and writer.fallbacks == 1
    # a value fastavro rejects too: its error, not silently wrong bytes
    with pytest.raises(TypeError, match="on field id"):
        writer.encode(dict(odd, id=None))
    # a schema the generated writer does not handle (decimal): every row through fastavro, same result
    dec = pa.table({"x": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2))})
    dschema, dplan = arrow_to_avro_schema(avro_ready_arrow_schema(dec.schema), name="d")
    dwriter = RowWriter(dschema, dplan)
    assert dwriter.fast is None
    assert [dwriter.encode(r) for r in dec.to_pylist()] == \
        [_fastavro_bytes(fastavro.parse_schema(dschema), r, dplan) for r in dec.to_pylist()]


def test_generated_row_writer_beats_fastavro(data_dir):
    """The generated row writer exists for speed: it must beat fastavro on a Fink file (by ~8x here; the figures
    are reported by bench/decode_throughput.py)."""
    schema, plan, rows = _parquet_rows(data_dir / "ztf_alerts" / "fink-science" / "part-0-0-435829.parquet")
    writer = RowWriter(schema, plan)
    t = time.process_time()
    for row in rows:
        writer.fast(row)
    fast = time.process_time() - t
    t = time.process_time()
    for row in rows:
        _fastavro_bytes(writer.parsed, row, plan)
    slow = time.process_time() - t
    assert fast < slow
