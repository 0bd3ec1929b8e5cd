"""Decoder: ZTF containers of every schema version, Rubin (container and Confluent wire), errors, codecs."""
from __future__ import annotations

import bz2
import gzip
import http.server
import io
import json
import lzma
import random
import socket
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import fastavro
import pytest
from astropy.time import Time

from schemas.alert_schemas import load_ztf_schema, load_ztf_schema_json
import stream.decode.container as container_module  # where the decompression cap is read
from stream.decode import (MAX_DECOMPRESSED_AVRO, Decoder, container_header, encode_long, make_container,
                           parse_container, read_long, split_container)
from stream.decode.codecs import TooLarge, snappy_decompress
from schemas.errors import DecodeError, PacketError, StampflowError, TransientError, UnsupportedPacket
from stream.file_source import FileSource
from schemas.packet import DeadLetter, Framing, Origin, Packet, RawMessage, StampEncoding, StampKind
from stream.schema_registry import (DirectorySchemaResolver, RegistrySchemaResolver, SchemaResolutionError,
                                    SchemaResolver)

KINDS = {StampKind.SCIENCE: "cutoutScience", StampKind.TEMPLATE: "cutoutTemplate",
         StampKind.DIFFERENCE: "cutoutDifference"}


def msg(value: bytes, **kw) -> RawMessage:
    return RawMessage(value=value, origin=Origin(file="test", index=0), **kw)


@pytest.fixture(scope="module")
def shared_messages(data_dir: Path) -> list[RawMessage]:
    """Every real Avro alert in the shared data as a single-alert message (multi-record files split)."""
    items = FileSource([data_dir / "ztf_alerts", data_dir / "lsst_alerts"])
    out = []
    for item in items:
        if isinstance(item, RawMessage):
            out.append(item)
    return out


@pytest.fixture(scope="module")
def rubin(data_dir: Path):
    raw = (data_dir / "lsst_alerts" / "fink-client" / "part-2-918301.avro").read_bytes()
    reader = fastavro.reader(io.BytesIO(raw))
    schema_text = reader.metadata["avro.schema"]
    return schema_text, list(reader)


# ---------------------------------------------------------------------------------------------------------------
# ZTF

def test_fixture_alerts_map_onto_packets(fixtures_dir):
    decoder = Decoder()
    for name in ("ZTF19acyjzeo.avro", "ZTF19acxxwrs.avro", "522193343315015001.avro"):
        value = (fixtures_dir / "alerts" / name).read_bytes()
        ref = next(fastavro.reader(io.BytesIO(value)))
        packet = decoder.decode(msg(value, ingest_time=123.0))
        cand = ref["candidate"]
        assert packet.candid == ref["candid"] and packet.object_id == ref["objectId"]
        assert packet.survey == "ZTF"
        assert packet.alert_time == pytest.approx(Time(cand["jd"], format="jd", scale="utc").unix, abs=1e-3)
        assert (packet.ra, packet.dec) == (cand["ra"], cand["dec"])
        assert packet.band == {1: "g", 2: "r", 3: "i"}[cand["fid"]]
        assert packet.schema_version == ref.get("schemavsn", "1.8")
        assert packet.raw is value and packet.ingest_time == 123.0 and packet.origin.file == "test"
        assert set(packet.stamps) == set(KINDS)
        for kind, field in KINDS.items():
            stamp = packet.stamps[kind]
            assert stamp.raw == ref[field]["stampData"]
            assert stamp.encoding is StampEncoding.FITS_GZ and stamp.nominal_size == 63
            assert stamp._image is None  # lazy: nothing decoded yet
        assert packet.extra["magpsf"] == pytest.approx(cand["magpsf"])
    assert packet.schema_version == "1.8"  # 522193343315015001 has no schemavsn field: from the writer schema
    assert packet.stamps[StampKind.SCIENCE].image().padded


def test_schema_13_jpeg_is_unsupported(fixtures_dir):
    value = (fixtures_dir / "alerts" / "121540793515135000.avro").read_bytes()
    for engine in ("auto", "fastavro"):
        with pytest.raises(UnsupportedPacket, match="ZTF alert schema 1.3 carries JPEG stamps; unsupported"):
            Decoder(engine=engine).decode(msg(value))
    dead = Decoder().decode_or_dead_letter(msg(value))
    assert isinstance(dead, DeadLetter) and dead.value == value and dead.stage == "decode"
    assert dead.error_type == "UnsupportedPacket"


def test_every_shared_alert_projection_matches_fastavro_reader(shared_messages):
    """The projected decode (both engines) gives what plain fastavro.reader gives, for every real alert."""
    decoders = {e: Decoder(engine=e) for e in ("codegen", "fastavro")}
    checked = 0
    for m in shared_messages:
        ref = next(fastavro.reader(io.BytesIO(m.value)))
        bare = RawMessage(value=m.value, origin=m.origin)  # decode the bytes, not the source's record
        packets = {}
        for engine, decoder in decoders.items():
            try:
                packets[engine] = decoder.decode(bare)
            except UnsupportedPacket:
                packets[engine] = None
        if packets["codegen"] is None:
            assert packets["fastavro"] is None and ref["cutoutScience"]["stampData"][:2] == b"\xff\xd8"
            continue
        a, b = packets["codegen"], packets["fastavro"]
        for attr in ("candid", "object_id", "survey", "alert_time", "ra", "dec", "band", "schema_version",
                     "extra", "flags"):
            assert getattr(a, attr) == getattr(b, attr), attr
        assert {k: s.raw for k, s in a.stamps.items()} == {k: s.raw for k, s in b.stamps.items()}
        if a.survey == "ZTF":
            assert a.candid == ref["candid"] and a.object_id == ref["objectId"]
            if "candidate" in ref:
                assert a.alert_time == (ref["candidate"]["jd"] - 2440587.5) * 86400
            else:  # the image-classification parquet: ids and a science stamp only
                assert a.alert_time is None and a.band is None and a.flags == ["no_candidate"]
            for kind, field in KINDS.items():
                if ref.get(field) and ref[field].get("stampData"):
                    assert a.stamps[kind].raw == ref[field]["stampData"]
        else:
            assert a.candid == ref["diaSourceId"] if "diaSourceId" in ref else ref["diaSource"]["diaSourceId"]
        # the source's pre-decoded record maps to the same packet
        if m.record is not None:
            c = Decoder().decode(m)
            assert (c.candid, c.object_id, c.alert_time, c.schema_version) == \
                (a.candid, a.object_id, a.alert_time, a.schema_version)
            assert {k: s.raw for k, s in c.stamps.items()} == {k: s.raw for k, s in a.stamps.items()}
        checked += 1
    assert checked == len(shared_messages) - 1 == 375


def test_schema_versions_seen(shared_messages):
    decoder = Decoder()
    seen = set()
    for m in shared_messages:
        try:
            p = decoder.decode(m)
        except UnsupportedPacket:
            seen.add(("ZTF", "1.3"))
            continue
        seen.add((p.survey, p.schema_version))
    assert seen == {("ZTF", "1.3"), ("ZTF", "1.8"), ("ZTF", "3.0"), ("ZTF", "3.2"), ("ZTF", "3.3"),
                    ("ZTF", "4.02"), ("ZTF", "unknown"),  # the 4-row image-classification parquet
                    ("LSST", "lsst.v10_0"), ("LSST", "lsst.v11_0"), ("LSST", "elasticc.v0_9")}


def test_multi_record_container_must_be_split(data_dir):
    value = (data_dir / "ztf_alerts" / "fink-client" / "avro_multi_alerts.avro").read_bytes()
    with pytest.raises(DecodeError, match="container holds 11 records; split it"):
        Decoder().decode(msg(value))
    entry, container, records = split_container(value)
    assert len(records) == 11 and container.count == 11
    full = list(fastavro.reader(io.BytesIO(value)))
    for (rec_bytes, projected), ref in zip(records, full):
        single = make_container(entry.schema_bytes, [rec_bytes])
        assert repr(next(fastavro.reader(io.BytesIO(single)))) == repr(ref)  # byte-exact cut, record intact
        assert projected["candid"] == ref["candid"]


def test_corrupt_files_raise_decode_error(data_dir):
    corrupt = sorted((data_dir / "ztf_alerts" / "ampel" / "ztf_public_20180601_corrupt").glob("*.avro"))
    assert len(corrupt) == 5
    for path in corrupt:
        with pytest.raises(DecodeError, match="truncated or corrupt Avro container"):
            Decoder().decode(msg(path.read_bytes()))


def test_bad_bytes_only_ever_raise_packet_errors(fixtures_dir):
    """Truncations, bit flips and junk: PacketError subclasses only, never anything else."""
    value = (fixtures_dir / "alerts" / "ZTF19acyjzeo.avro").read_bytes()
    decoder = Decoder()
    rng = random.Random(1234)
    header_len = parse_container(value).header_len
    cases = [b"", b"\x00", b"Obj\x01", b"Obj\x01\x00", b"\x00\x00\x00\x00\x01garbage", b"junk" * 10]
    cases += [value[:cut] for cut in rng.sample(range(1, len(value)), 60)]
    for _ in range(150):
        flipped = bytearray(value)
        pos = rng.randrange(4, header_len + 3000)  # header and the record's head, where structure lives
        flipped[pos] ^= 1 << rng.randrange(8)
        cases.append(bytes(flipped))
    outcomes = {"ok": 0, "error": 0}
    for case in cases:
        for d in (decoder, Decoder(engine="fastavro")):
            try:
                d.decode(msg(case))
                outcomes["ok"] += 1
            except PacketError:
                outcomes["error"] += 1
    assert outcomes["error"] > 100


def test_sync_marker_is_checked(fixtures_dir):
    value = bytearray((fixtures_dir / "alerts" / "ZTF19acyjzeo.avro").read_bytes())
    value[-3] ^= 0xFF
    with pytest.raises(DecodeError, match="bad sync marker after block 0"):
        Decoder().decode(msg(bytes(value)))


def test_framing_sniffing_and_explicit_framing(fixtures_dir):
    value = (fixtures_dir / "alerts" / "ZTF19acyjzeo.avro").read_bytes()
    assert Decoder().decode(msg(value, framing=Framing.ZTF)).object_id == "ZTF19acyjzeo"
    with pytest.raises(DecodeError, match="unrecognised framing"):
        Decoder().decode(msg(b"\x05" + value))
    with pytest.raises(DecodeError, match="not an Avro object container"):
        Decoder().decode(msg(b"\x00" + value, framing=Framing.ZTF))
    with pytest.raises(DecodeError, match="no schema registry"):
        Decoder().decode(msg(b"\x00\x00\x00\x00\x07" + b"\x02" * 40))


def _reencode(value: bytes, codec: str) -> bytes:
    reader = fastavro.reader(io.BytesIO(value))
    schema = json.loads(reader.metadata["avro.schema"])
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), list(reader), codec=codec)
    return out.getvalue()


def test_the_one_varint_matches_fastavro():
    """`encode_long` (containers and generated row writers) and `read_long` (containers and generated readers)
    agree with fastavro on the edges of every varint length and of the int64 range."""
    values = [0, -1, 1, 63, -64, 64, -65, 127, 128, 8191, -8192, 8192, (1 << 31) - 1, -(1 << 31),
              (1 << 63) - 1, -(1 << 63)] + [sign * (1 << k) + d for k in range(1, 63) for d in (-1, 0)
                                            for sign in (1, -1)]
    for v in values:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, "long", v)
        assert encode_long(v) == buf.getvalue(), v
        assert read_long(b"\xff" + encode_long(v) + b"\x00", 1) == (v, 1 + len(buf.getvalue()))


@pytest.mark.parametrize("codec", ["deflate", "bzip2", "xz"])
def test_compressed_containers(fixtures_dir, codec):
    value = (fixtures_dir / "alerts" / "ZTF19acxxwrs.avro").read_bytes()
    plain = Decoder().decode(msg(value))
    packed = Decoder().decode(msg(_reencode(value, codec)))
    assert parse_container(_reencode(value, codec)).codec == codec
    assert (packed.candid, packed.object_id, packed.alert_time) == (plain.candid, plain.object_id, plain.alert_time)
    assert {k: s.raw for k, s in packed.stamps.items()} == {k: s.raw for k, s in plain.stamps.items()}


def _snappy_literal(data: bytes) -> bytes:
    """A valid raw-snappy stream of literals only (enough to test the decoder without a snappy library)."""
    n, out = len(data), bytearray()
    v = n
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    for i in range(0, n, 65536):
        chunk = data[i:i + 65536]
        out.append(61 << 2)  # literal, length-1 in the next 2 bytes
        out += (len(chunk) - 1).to_bytes(2, "little")
        out += chunk
    return bytes(out) + (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")


def test_snappy_codec(fixtures_dir):
    # copies with overlap: "abcd" literal, then copy offset 4 length 8 (tag kind 1)
    stream = bytes([12, 3 << 2]) + b"abcd" + bytes([((8 - 4) << 2) | 1, 4])
    assert snappy_decompress(stream + (zlib.crc32(b"abcd" * 3)).to_bytes(4, "big")) == b"abcd" * 3
    with pytest.raises(ValueError, match="CRC"):
        snappy_decompress(stream + b"\x00\x00\x00\x00")
    value = (fixtures_dir / "alerts" / "ZTF19acxxwrs.avro").read_bytes()
    c = parse_container(value)
    count, buf, start, end = c.blocks[0]
    body = buf[start:end]
    comp = _snappy_literal(body)
    enc = encode_long
    header = (b"Obj\x01" + enc(2) + enc(11) + b"avro.schema" + enc(len(c.schema_bytes)) + c.schema_bytes
              + enc(10) + b"avro.codec" + enc(6) + b"snappy" + b"\x00")
    snappy_value = header + c.sync + enc(1) + enc(len(comp)) + comp + c.sync
    assert parse_container(snappy_value).codec == "snappy"
    assert Decoder().decode(msg(snappy_value)).candid == Decoder().decode(msg(value)).candid


# ---------------------------------------------------------------------------------------------------------------
# Decompression bombs in Avro blocks

def _codec_container(schema_bytes: bytes, sync: bytes, codec: str, blocks: list[bytes]) -> bytes:
    header = (b"Obj\x01" + encode_long(2) + encode_long(11) + b"avro.schema" + encode_long(len(schema_bytes))
              + schema_bytes + encode_long(10) + b"avro.codec" + encode_long(len(codec)) + codec.encode() + b"\x00")
    out = [header, sync]
    for block in blocks:
        out += [encode_long(1), encode_long(len(block)), block, sync]
    return b"".join(out)


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


_BOMB_MIB = 32
_BOMBS = {"deflate": _deflate, "bzip2": lambda d: bz2.compress(d, 1), "xz": lambda d: lzma.compress(d, preset=0)}


@pytest.mark.parametrize("codec", sorted(_BOMBS))
def test_compressed_block_bombs_are_capped(fixtures_dir, monkeypatch, codec):
    """32 MiB of zeros in a ~10 kB block, with the cap lowered to 4 MiB (the real cap, 512 MiB, works the same):
    DecodeError, after inflating at most about the cap."""
    assert MAX_DECOMPRESSED_AVRO == 512 << 20
    monkeypatch.setattr(container_module, "MAX_DECOMPRESSED_AVRO", 4 << 20)
    c = parse_container((fixtures_dir / "alerts" / "ZTF19acxxwrs.avro").read_bytes())
    bomb = _BOMBS[codec](bytes(_BOMB_MIB << 20))
    assert len(bomb) < 100_000
    value = _codec_container(c.schema_bytes, c.sync, codec, [bomb])
    tracemalloc.start()
    try:
        t = time.perf_counter()
        with pytest.raises(DecodeError, match=r"decompressed size exceeds 4 MiB"):
            Decoder().decode(msg(value))
        elapsed = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20, f"{peak >> 20} MiB allocated"  # not the 32 MiB the block would inflate to
    assert elapsed < 2.0
    # the cap is per message: two blocks of 3 MiB each pass one by one but not together
    small = _BOMBS[codec](bytes(3 << 20))
    with pytest.raises(DecodeError, match="decompressed size exceeds 4 MiB"):
        parse_container(_codec_container(c.schema_bytes, c.sync, codec, [small, small]))
    assert parse_container(_codec_container(c.schema_bytes, c.sync, codec, [small])).blocks[0][3] == 3 << 20


def test_zstandard_bomb_is_capped(fixtures_dir, monkeypatch):
    zstandard = pytest.importorskip("zstandard")  # optional dependency (the codec needs it)
    monkeypatch.setattr(container_module, "MAX_DECOMPRESSED_AVRO", 4 << 20)
    c = parse_container((fixtures_dir / "alerts" / "ZTF19acxxwrs.avro").read_bytes())
    count, buf, start, end = c.blocks[0]
    good = _codec_container(c.schema_bytes, c.sync, "zstandard", [zstandard.ZstdCompressor().compress(buf[start:end])])
    assert Decoder().decode(msg(good)).object_id == "ZTF19acxxwrs"
    streamed = zstandard.ZstdCompressor().compressobj()  # no content size in the frame header: read and counted
    for bomb in (zstandard.ZstdCompressor().compress(bytes(_BOMB_MIB << 20)),
                 streamed.compress(bytes(_BOMB_MIB << 20)) + streamed.flush()):
        with pytest.raises(DecodeError, match="zstandard block 0: decompressed size exceeds 4 MiB"):
            Decoder().decode(msg(_codec_container(c.schema_bytes, c.sync, "zstandard", [bomb])))


def test_snappy_bomb_and_overlong_copies(fixtures_dir):
    # the declared length is checked before anything is inflated
    declared = bytes([0x80, 0x80, 0x80, 0x80, 0x08])  # varint 2**31
    with pytest.raises(TooLarge, match="decompressed size exceeds 512 MiB"):
        snappy_decompress(declared + b"\x00a" + b"\x00" * 4, MAX_DECOMPRESSED_AVRO)
    # copies may not write past the declared length: 'a' then copies of 64 bytes at offset 1, declared 10
    copies = bytes([10]) + b"\x00a" + bytes([(63 << 2) | 2, 1, 0]) * 1000
    with pytest.raises(ValueError, match="longer than its declared 10 bytes"):
        snappy_decompress(copies + b"\x00" * 4)
    c = parse_container((fixtures_dir / "alerts" / "ZTF19acxxwrs.avro").read_bytes())
    value = _codec_container(c.schema_bytes, c.sync, "snappy", [declared + b"\x00a" + b"\x00" * 4])
    with pytest.raises(DecodeError, match="snappy block 0: decompressed size exceeds 512 MiB"):
        Decoder().decode(msg(value))


def test_truncated_compressed_blocks_are_decode_errors(fixtures_dir):
    c = parse_container((fixtures_dir / "alerts" / "ZTF19acxxwrs.avro").read_bytes())
    count, buf, start, end = c.blocks[0]
    for codec, compress in _BOMBS.items():
        packed = compress(bytes(buf[start:end]))
        good = _codec_container(c.schema_bytes, c.sync, codec, [packed])
        assert Decoder().decode(msg(good)).object_id == "ZTF19acxxwrs"
        with pytest.raises(DecodeError, match=f"corrupt {codec} block 0"):
            Decoder().decode(msg(_codec_container(c.schema_bytes, c.sync, codec, [packed[:len(packed) // 2]])))


def test_container_header_is_reusable(fixtures_dir):
    c = parse_container((fixtures_dir / "alerts" / "ZTF19acxxwrs.avro").read_bytes())
    records = [bytes(c.blocks[0][1][c.blocks[0][2]:c.blocks[0][3]])]
    header = container_header(c.schema_bytes, c.sync)
    assert make_container(c.schema_bytes, records, sync=c.sync, header=header) == \
        make_container(c.schema_bytes, records, sync=c.sync)
    assert Decoder().decode(msg(make_container(c.schema_bytes, records, header=header))).object_id == "ZTF19acxxwrs"


def test_record_already_decoded_is_mapped_directly(fixtures_dir):
    value = (fixtures_dir / "alerts" / "ZTF19acyjzeo.avro").read_bytes()
    record = next(fastavro.reader(io.BytesIO(value)))
    from_record = Decoder().decode(RawMessage(value=b"", origin=Origin(file="x"), record=record))
    from_bytes = Decoder().decode(msg(value))
    assert (from_record.candid, from_record.object_id, from_record.schema_version, from_record.band) == \
        (from_bytes.candid, from_bytes.object_id, from_bytes.schema_version, from_bytes.band)


def test_ztf_v402_schema_package_roundtrip():
    parsed = load_ztf_schema("4.02")
    assert parsed["name"] == "ztf.alert"
    assert [f["name"] for f in parsed["fields"]][-3:] == ["cutoutScience", "cutoutTemplate", "cutoutDifference"]
    with pytest.raises(ValueError, match="unknown ZTF schema version"):
        load_ztf_schema("9.99")


def test_written_v402_alert_decodes(fixtures_dir):
    """An alert written with the packaged official 4.02 schema (fp_hists, no prv) decodes."""
    old = next(fastavro.reader(open(fixtures_dir / "alerts" / "ZTF19acyjzeo.avro", "rb")))
    schema = load_ztf_schema_json("4.02")
    cand_fields = next(f for f in schema["fields"] if f["name"] == "candidate")["type"]["fields"]
    cand = {f["name"]: old["candidate"].get(f["name"], f.get("default")) for f in cand_fields}
    for f in cand_fields:  # fields that are required in 4.02 but absent from the 3.3 record
        if cand[f["name"]] is None and f["type"] in ("int", "long", "float", "double", "string"):
            cand[f["name"]] = {"string": "x"}.get(f["type"], 0)
    rec = {"schemavsn": "4.02", "publisher": "test", "objectId": old["objectId"], "candid": old["candid"],
           "candidate": cand, "prv_candidates": None, "fp_hists": [],
           "cutoutScience": old["cutoutScience"], "cutoutTemplate": None, "cutoutDifference": old["cutoutDifference"]}
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), [rec])
    packet = Decoder().decode(msg(out.getvalue()))
    assert packet.schema_version == "4.02" and packet.candid == old["candid"]
    assert set(packet.stamps) == {StampKind.SCIENCE, StampKind.DIFFERENCE}  # missing cutout: simply absent


# ---------------------------------------------------------------------------------------------------------------
# Rubin

def _check_rubin(packet: Packet, rec: dict) -> None:
    src = rec["diaSource"]
    assert packet.survey == "LSST"
    assert packet.candid == rec["diaSourceId"] == src["diaSourceId"]
    object_id = (rec.get("diaObject") or {}).get("diaObjectId") or src.get("diaObjectId")
    if object_id:
        assert packet.object_id == str(object_id)
    else:  # a solar-system source: no diaObject, diaSource.diaObjectId 0 -> named after its ssObjectId
        assert src["diaObjectId"] in (0, None) and src["ssObjectId"]
        assert packet.object_id == f"ss:{src['ssObjectId']}" and "solar_system" in packet.flags
    assert packet.band == src["band"] and (packet.ra, packet.dec) == (src["ra"], src["dec"])
    expected = Time(src["midpointMjdTai"], format="mjd", scale="tai").unix
    assert packet.alert_time == pytest.approx(expected, abs=1e-3)
    assert set(packet.stamps) == set(KINDS)
    for kind, field in KINDS.items():
        stamp = packet.stamps[kind]
        assert stamp.raw == rec[field] and stamp.encoding is StampEncoding.FITS  # Rubin stamps: plain FITS
        assert stamp.nominal_size is None
    img = packet.stamps[StampKind.DIFFERENCE].image()
    assert img.data.shape == (30, 30) and not img.padded


def test_rubin_in_ztf_framing(data_dir, rubin):
    _, records = rubin
    messages = [m for m in FileSource(data_dir / "lsst_alerts" / "fink-client" / "part-2-918301.avro")]
    assert len(messages) == 7
    for m, rec in zip(messages, records):
        packet = Decoder().decode(RawMessage(value=m.value, origin=m.origin))
        _check_rubin(packet, rec)
        assert packet.schema_version == "lsst.v10_0"


def test_rubin_v11_sample_and_elasticc(data_dir):
    v11 = (data_dir / "lsst_alerts" / "lsst-alert_packet" / "v11_0_fakeAlert.avro").read_bytes()
    packet = Decoder().decode(msg(v11))
    ref = next(fastavro.reader(io.BytesIO(v11)))
    assert packet.survey == "LSST" and packet.schema_version == "lsst.v11_0" and packet.stamps == {}
    assert packet.object_id == str(ref["diaObject"]["diaObjectId"])  # diaSource.diaObjectId is null here
    el = gzip.decompress((data_dir / "lsst_alerts" / "fink-client" /
                          "alert_mjd60674.0512_obj747_src1494043.avro.gz").read_bytes())
    packet = Decoder().decode(msg(el))
    assert (packet.candid, packet.object_id, packet.band, packet.schema_version) == \
        (1494043, "747", "Y", "elasticc.v0_9")


_BODIES: dict[int, list[bytes]] = {}


def _confluent_messages(rubin, schema_id: int) -> list[bytes]:
    """The real Rubin records re-encoded schemaless with their writer schema, behind b"\x00" + schema id."""
    schema_text, records = rubin
    key = id(records)
    if key not in _BODIES:
        parsed = fastavro.parse_schema(json.loads(schema_text))
        bodies = []
        for rec in records:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, parsed, rec)
            bodies.append(buf.getvalue())
        _BODIES[key] = bodies
    return [b"\x00" + schema_id.to_bytes(4, "big") + body for body in _BODIES[key]]


def test_confluent_wire_via_schema_directory(tmp_path, rubin):
    schema_text, records = rubin
    (tmp_path / "42.avsc").write_text(schema_text)
    decoder = Decoder(tmp_path)
    assert isinstance(decoder.resolver, DirectorySchemaResolver)
    for value, rec in zip(_confluent_messages(rubin, 42), records):
        packet = decoder.decode(msg(value))
        _check_rubin(packet, rec)
        assert decoder.decode(msg(value, framing=Framing.CONFLUENT)).candid == packet.candid
    with pytest.raises(SchemaResolutionError, match="schema id 43 not found"):
        decoder.decode(msg(_confluent_messages(rubin, 43)[0]))
    with pytest.raises(DecodeError, match="longer|shorter|does not decode"):
        decoder.decode(msg(_confluent_messages(rubin, 42)[0][:-100]))
    confluent = Decoder(tmp_path, framing=Framing.CONFLUENT)
    with pytest.raises(DecodeError, match="not Confluent wire"):
        confluent.decode(msg(b"Obj\x01" + b"\x00" * 40))  # the decoder's framing applies to AUTO messages
    # The happy path, 404s and outages against a real registry (Apicurio): tests/integration/test_registry_rubin.py


# ---------------------------------------------------------------------------------------------------------------
# Schema registry outages: TransientError (stop, do not commit), never a dead letter

class _Flaky(http.server.BaseHTTPRequestHandler):
    """A registry answering ``status`` (500, 503, 401, ...) to every request, or serving ``schemas`` when 200."""

    status = 500
    schemas: dict[int, str] = {}

    def do_GET(self):  # noqa: N802
        schema_id = int(self.path.rsplit("/", 1)[1])
        if self.status == 200 and schema_id in self.schemas:
            body = json.dumps({"schema": self.schemas[schema_id]}).encode()
            code = 200
        elif self.status == 200:
            body, code = json.dumps({"error_code": 40403, "message": "Schema not found"}).encode(), 404
        else:
            body = json.dumps({"error_code": 50001, "message": "Error in the backend\ndata store"}).encode()
            code = self.status
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def flaky_registry():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connecting is refused


def _assert_transient(exc: BaseException, url_part: str, schema_id: int) -> None:
    assert isinstance(exc, TransientError) and isinstance(exc, StampflowError)
    assert not isinstance(exc, PacketError)  # the engine would dead-letter (and commit) a PacketError
    text = str(exc)
    assert "\n" not in text and url_part in text and f"schema id {schema_id}" in text


@pytest.mark.parametrize("status", [500, 502, 503, 401])
def test_registry_errors_are_transient_not_dead_letters(rubin, flaky_registry, status):
    schema_text, records = rubin
    _Flaky.status, _Flaky.schemas = status, {7: schema_text}
    value = _confluent_messages(rubin, 7)[0]
    decoder = Decoder(flaky_registry)
    with pytest.raises(TransientError) as info:
        decoder.decode(msg(value))
    _assert_transient(info.value, f"{flaky_registry}/schemas/ids/7", 7)
    assert f"HTTP {status}" in str(info.value)
    with pytest.raises(TransientError):  # propagates through decode_or_dead_letter too: no dead letter
        decoder.decode_or_dead_letter(msg(value))
    with pytest.raises(TransientError):  # the resolver itself, and directory-then-registry
        RegistrySchemaResolver(flaky_registry).get(7)
    _Flaky.status = 200  # the registry is back: nothing was cached, the same decoder now decodes
    _check_rubin(decoder.decode(msg(value)), records[0])


def test_registry_404_and_bad_schema_stay_per_packet(rubin, flaky_registry, tmp_path):
    schema_text, _ = rubin
    _Flaky.status, _Flaky.schemas = 200, {7: schema_text, 9: "{not json"}
    decoder = Decoder(SchemaResolver(schema_dir=tmp_path, registry_url=flaky_registry))
    with pytest.raises(SchemaResolutionError, match="schema id 8 not found"):  # 404: unknown id
        decoder.decode(msg(_confluent_messages(rubin, 8)[0]))
    with pytest.raises(SchemaResolutionError, match="not valid JSON"):  # unparsable schema
        decoder.decode(msg(b"\x00" + (9).to_bytes(4, "big") + b"\x02" * 10))
    dead = decoder.decode_or_dead_letter(msg(_confluent_messages(rubin, 8)[0]))
    assert isinstance(dead, DeadLetter) and dead.stage == "decode"
    _Flaky.status = 503  # directory miss, then registry down: transient, not "not found"
    with pytest.raises(TransientError, match="HTTP 503"):
        decoder.decode(msg(_confluent_messages(rubin, 11)[0]))


def test_registry_closed_port_and_timeout_are_transient(rubin):
    value = _confluent_messages(rubin, 7)[0]
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TransientError) as info:
        Decoder(url).decode(msg(value))
    _assert_transient(info.value, f"{url}/schemas/ids/7", 7)
    assert "unreachable" in str(info.value)
    # a listener that never answers: the request times out
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        t = time.monotonic()
        with pytest.raises(TransientError) as info:
            Decoder(RegistrySchemaResolver(url, timeout=0.3)).decode(msg(value))
        assert time.monotonic() - t < 5
    _assert_transient(info.value, url, 7)
    assert "timed out" in str(info.value)
