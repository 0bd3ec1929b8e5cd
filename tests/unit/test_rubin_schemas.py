"""Rubin's own alert schemas (lsst-alert-packet): every shipped version's sample alert, framed as Rubin frames it
(magic byte 0 + 4-byte big-endian id major*100+minor), decodes through the worker's Decoder with no registry, its
stamps are read and flagged, and a result is published through the engine with a real file sink."""
from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits
from lsst.alert.packet.schema import Schema, get_schema_path

from models.base import BatchPrediction, Classifier, InputSpec, ModelInfo
from schemas.errors import StampflowError
from schemas.packet import DeadLetter, Framing, Origin, Packet, RawMessage, StampEncoding, StampKind
from schemas.rubin import (encode_rubin_alert, rubin_package_version, rubin_sample_alert, rubin_schema_by_id,
                           rubin_schema_id, rubin_schema_text, rubin_schema_versions, rubin_version_of_id)
from stream.decode import Decoder
from stream.decode.mappers import mjd_tai_to_unix
from stream.engine import Engine
from stream.metrics import Metrics
from stream.schema_registry import RubinPackageResolver, SchemaResolutionError, SchemaResolver
from stream.sinks import FileSink
from stream.sources import IterSource

VERSIONS = rubin_schema_versions()
CUTOUTS = {StampKind.SCIENCE: "cutoutScience", StampKind.TEMPLATE: "cutoutTemplate",
           StampKind.DIFFERENCE: "cutoutDifference"}


def msg(value: bytes, index: int = 0) -> RawMessage:
    return RawMessage(value=value, origin=Origin(file="rubin", index=index))


@pytest.fixture(scope="module")
def real_cutouts(data_dir: Path) -> dict[str, bytes]:
    """The three cutouts of a real Rubin alert from the shared data (30x30 FITS each)."""
    with open(data_dir / "lsst_alerts" / "fink-client" / "part-2-918301.avro", "rb") as fh:
        rec = next(fastavro.reader(fh))
    return {field: rec[field] for field in CUTOUTS.values()}


def nan_corner(fits_bytes: bytes) -> bytes:
    """The same cutout with a 10x10 NaN corner, as a Rubin cutout at the edge of a detector has."""
    with fits.open(io.BytesIO(fits_bytes)) as hdul:
        hdu = next(h for h in hdul if h.data is not None)
        hdu.data = hdu.data.astype(np.float32)
        hdu.data[:10, :10] = np.nan
        out = io.BytesIO()
        hdul.writeto(out)
    return out.getvalue()


def with_cutouts(record: dict, cutouts: dict[str, bytes]) -> dict:
    """A sample alert with the real cutouts in the fields every schema version has (3.0-6.0 have no science)."""
    out = dict(record)
    for field, data in cutouts.items():
        if field in out:
            out[field] = data
    return out


def test_the_package_ships_every_version_and_ids_follow_rubin():
    assert rubin_package_version() == "30.2026.2700"  # pinned in pyproject.toml
    assert VERSIONS == ((3, 0), (4, 0), (5, 0), (6, 0), (6, 1), (7, 0), (7, 1), (7, 2), (7, 3), (7, 4), (8, 0),
                        (9, 0), (10, 0), (11, 0), (11, 1))
    for major, minor in VERSIONS:
        # Rubin's own id function (digits of the schema name, minor zero-padded) agrees with major*100+minor.
        path = f"{get_schema_path(major, minor)}/lsst.v{major}_{minor}.alert.avsc"
        assert Schema.from_file(path).get_schema_id() == rubin_schema_id(major, minor) == major * 100 + minor
        assert rubin_version_of_id(major * 100 + minor) == (major, minor)
        assert json.loads(rubin_schema_by_id(major * 100 + minor))["name"] == f"lsst.v{major}_{minor}.alert"
    assert rubin_schema_id(7, 1) == 701 and rubin_schema_id(11, 1) == 1101
    for unknown in (0, 7, 705, 1102, 9999):
        assert rubin_version_of_id(unknown) is None and rubin_schema_by_id(unknown) is None


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"v{v[0]}.{v[1]}")
def test_sample_alert_framed_as_rubin_decodes_with_no_registry(version):
    major, minor = version
    sample = rubin_sample_alert(major, minor)
    value = encode_rubin_alert(sample, major, minor)
    assert value[0] == 0 and int.from_bytes(value[1:5], "big") == major * 100 + minor
    # What a consumer of Rubin's stream reads with Rubin's own package, as the reference.
    ref = Schema.from_file(f"{get_schema_path(major, minor)}/lsst.v{major}_{minor}.alert.avsc").deserialize(value[5:])
    src = ref["diaSource"]
    packets = [Decoder(engine=engine).decode(msg(value)) for engine in ("auto", "fastavro")]
    packets.append(Decoder(framing=Framing.CONFLUENT).decode(msg(value)))
    for packet in packets:
        assert packet.survey == "LSST" and packet.schema_version == f"lsst.v{major}_{minor}"
        assert packet.candid == ref.get("diaSourceId", src["diaSourceId"])
        assert packet.object_id == str(ref["diaObject"]["diaObjectId"])
        assert packet.ra == src["ra"] and packet.dec == src.get("dec", src.get("decl"))
        assert packet.band == src.get("band", src.get("filterName"))
        mjd = src.get("midpointMjdTai", src.get("midPointTai"))
        assert packet.alert_time == pytest.approx(mjd_tai_to_unix(mjd))
        # The shipped samples carry no cutouts (null in every version): no stamps, and the packet says so.
        assert packet.stamps == {} and packet.flags == ["no_stamps"]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"v{v[0]}.{v[1]}")
def test_sample_alert_with_real_cutouts_reads_every_stamp(version, real_cutouts):
    major, minor = version
    record = with_cutouts(rubin_sample_alert(major, minor), real_cutouts)
    packet = Decoder().decode(msg(encode_rubin_alert(record, major, minor)))
    kinds = {kind for kind, field in CUTOUTS.items() if field in record}
    assert set(packet.stamps) == kinds and "no_stamps" not in packet.flags
    assert len(kinds) == (2 if version < (6, 1) else 3)  # cutoutScience arrived in 6.1
    for kind in kinds:
        stamp = packet.stamps[kind]
        assert stamp.raw == real_cutouts[CUTOUTS[kind]] and stamp.encoding is StampEncoding.FITS
        image = stamp.image()
        assert image.data.shape == (30, 30) and np.isfinite(image.data).any()


class RubinStampProbe(Classifier):
    """A classifier on the model seam that takes Rubin stamps (no Rubin model exists yet), so the real router
    reads them (prepare_batch -> Stamp.image) and flags them (routing.stamp_flags)."""

    family = "test"

    def __init__(self):
        super().__init__(ModelInfo("rubin-probe", "0.0.1", "test", Path(".")))
        self.seen = 0

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec("LSST", (StampKind.TEMPLATE, StampKind.DIFFERENCE), 32, 0.2)

    @property
    def classes(self):
        return ("negative", "positive")

    @classmethod
    def load(cls, info):
        return cls()

    def predict_batch(self, batch: np.ndarray) -> BatchPrediction:
        self.seen += len(batch)
        positive = np.nansum(batch[..., 1].reshape(len(batch), -1), axis=1) > 0
        probs = np.stack([~positive, positive], axis=1).astype(float)
        return BatchPrediction([self.classes[int(p)] for p in positive], probs, np.zeros(len(batch)), self.classes)


def test_every_version_is_published_through_the_engine(tmp_path, real_cutouts):
    """As shipped (no stamps: unrouted, flagged no_stamps), with real cutouts (read by the probe, nothing to
    flag) and with a NaN corner in the difference cutout (flagged nan_pixels), every version gets exactly one
    result in the sink; an unknown id is one dead letter."""
    edge = dict(real_cutouts, cutoutDifference=nan_corner(real_cutouts["cutoutDifference"]))
    items, expect = [], []
    for major, minor in VERSIONS:
        sample = rubin_sample_alert(major, minor)
        candid = sample.get("diaSourceId", sample["diaSource"]["diaSourceId"])
        items.append(msg(encode_rubin_alert(sample, major, minor), len(items)))
        expect.append(("as-shipped", candid))
        items.append(msg(encode_rubin_alert(with_cutouts(sample, real_cutouts), major, minor), len(items)))
        expect.append(("cutouts", candid))
        items.append(msg(encode_rubin_alert(with_cutouts(sample, edge), major, minor), len(items)))
        expect.append(("edge", candid))
    unknown = b"\x00" + (1199).to_bytes(4, "big") + encode_rubin_alert(rubin_sample_alert(11, 1), 11, 1)[5:]
    items.append(msg(unknown, len(items)))
    probe = RubinStampProbe()
    sink = FileSink(tmp_path / "out.jsonl", "jsonl", tmp_path / "dead", "test-version")
    engine = Engine(IterSource(iter(items)), sink, [probe], Decoder(), Metrics(), max_batch=8, max_wait_ms=50,
                    max_consecutive_failures=100, code_version="test-version", config_hash="0123456789abcdef")
    stats = engine.run()
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert stats.results == len(results) == len(expect) == 3 * len(VERSIONS)
    assert probe.seen == 2 * len(VERSIONS)  # every version's stamps reached a model
    by_index = {r["source"]["index"]: r for r in results}
    for index, (kind, _) in enumerate(expect):
        r = by_index[index]
        assert r["survey"] == "LSST" and r["code_version"] == "test-version"
        assert r["candid"] == expect[index][1]
        if kind == "as-shipped":
            assert r["flags"] == ["no_stamps", "unrouted"] and r["predictions"] == []
        else:
            assert r["flags"] == ([] if kind == "cutouts" else ["nan_pixels"])
            assert [p["model"] for p in r["predictions"]] == ["rubin-probe"]
    dead = [json.loads(line) for line in (tmp_path / "dead" / "dead_letters.jsonl").read_text().splitlines()]
    assert len(dead) == stats.dead_letters == 1
    assert dead[0]["stage"] == "decode" and "schema id 1199 is not a Rubin alert schema id" in dead[0]["error"]
    assert "1101" in dead[0]["error"] and "\n" not in dead[0]["error"]


def test_unknown_id_is_a_dead_letter_with_a_clear_error():
    value = b"\x00" + (4242).to_bytes(4, "big") + b"\x02" * 20
    dead = Decoder().decode_or_dead_letter(msg(value))
    assert isinstance(dead, DeadLetter) and dead.stage == "decode"
    assert dead.error.startswith("schema id 4242 is not a Rubin alert schema id: lsst-alert-packet 30.2026.2700 "
                                 "ships ids 300, 400, 500, 600, 601, 700, 701, 702, 703, 704, 800, 900, 1000, "
                                 "1100, 1101")
    with pytest.raises(SchemaResolutionError, match="no schema registry is configured"):
        RubinPackageResolver().get(4242)


def test_resolver_chain_directory_then_package_and_never_package_behind_a_registry(tmp_path):
    pinned = {"type": "record", "name": "lsst.v99_0.alert", "fields": [
        {"name": "diaSourceId", "type": "long"},
        {"name": "diaSource", "type": {"type": "record", "name": "lsst.v99_0.diaSource",
                                       "fields": [{"name": "diaSourceId", "type": "long"},
                                                  {"name": "ra", "type": "double"}]}}]}
    (tmp_path / "9900.avsc").write_text(json.dumps(pinned))
    resolver = SchemaResolver(schema_dir=tmp_path)  # what the worker builds with only a schema directory
    assert json.loads(resolver.get(9900))["name"] == "lsst.v99_0.alert"  # the directory
    assert resolver.get(701) == rubin_schema_text(7, 1)  # the package, for the ids the directory lacks
    with pytest.raises(SchemaResolutionError, match="schema id 9901 not found.*not a Rubin alert schema id"):
        resolver.get(9901)
    assert SchemaResolver().get(1101) == rubin_schema_text(11, 1)
    with pytest.raises(StampflowError, match="needs a schema directory"):
        SchemaResolver(rubin_package=False)
    with pytest.raises(StampflowError, match="a registry answers for its own ids"):
        SchemaResolver(registry_url="http://127.0.0.1:9", rubin_package=True)
    behind = SchemaResolver(registry_url="http://127.0.0.1:9")
    assert not any(isinstance(p, RubinPackageResolver) for p in behind.providers)
    decoder = Decoder(SchemaResolver(schema_dir=tmp_path))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(pinned), {"diaSourceId": 5, "diaSource": {
        "diaSourceId": 5, "ra": 1.5}})
    packet = decoder.decode(msg(b"\x00" + (9900).to_bytes(4, "big") + body.getvalue()))
    assert isinstance(packet, Packet) and packet.candid == 5 and packet.schema_version == "lsst.v99_0"
