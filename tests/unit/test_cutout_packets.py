"""Archival cutout packets: schema, decoding, routing by InputSpec (survey, bands, size, geometry), truth scoring."""
from __future__ import annotations

import json
from pathlib import Path

import fastavro
import numpy as np
import pytest

from models.base import BatchPrediction, Classifier, InputSpec, ModelInfo, ZTF_PIXEL_SCALE
from models.preprocess import prepare_batch, prepare_images
from models.registry import Registry
from schemas.cutout_packet import Cutout, encode_cutout, parsed_schema, read_cutout_file, write_cutout_file
from stream.cli import main
from stream.decode import Decoder, cutout_candid
from stream.engine import Engine
from schemas.errors import DecodeError
from stream.metrics import Metrics
from schemas.packet import Origin, RawMessage, StampKind
from stream.sinks import FileSink
from stream.sources import IterSource
from tests.cutouts import as_packets

RADIO_SPEC = InputSpec(survey=("FIRST",), size=150, pixel_scale=1.8, channels=("1.4GHz",), geometry="crop")


def radio_cutout(i: int = 0, size: int = 300, label: str | None = "FRII", scale: float = 1.8) -> Cutout:
    rng = np.random.default_rng(i)
    img = rng.normal(0, 1, (size, size)).astype(np.float32)
    img[size // 2 - 3:size // 2 + 3, size // 2 - 3:size // 2 + 3] += 50 + i
    return Cutout(id=f"src-{i}", survey="FIRST", bands=["1.4GHz"], images={"1.4GHz": img}, pixel_scale=scale,
                  instrument="VLA", ra=150.0 + i, dec=2.0, truth_label=label, dataset="test", split="valid")


def decode(c: Cutout):
    return as_packets([c])[0]


def test_schema_carries_what_the_issue_lists():
    names = {f["name"] for f in parsed_schema()["fields"]}
    assert {"id", "survey", "instrument", "bands", "pixel_scale", "ra", "dec", "stamps", "truth"} <= names
    stamp = next(f for f in parsed_schema()["fields"] if f["name"] == "stamps")["type"]["items"]
    assert [f["name"] for f in stamp["fields"]] == ["band", "encoding", "height", "width", "data"]


def test_cutout_round_trip_keeps_pixels_and_metadata():
    c = radio_cutout(3)
    p = decode(c)
    assert p.survey == "FIRST" and p.object_id == "src-3" and p.packet_id == "src-3"
    assert p.candid == cutout_candid("src-3") > 0
    assert p.pixel_scale == 1.8 and p.ra == 153.0 and p.truth["label"] == "FRII"
    assert p.band_stamps["1.4GHz"].shape == (300, 300)
    np.testing.assert_array_equal(p.band_stamps["1.4GHz"].image().data, c.images["1.4GHz"])
    assert p.extra["dataset"] == "test" and p.extra["split"] == "valid"
    # the same cutout always encodes to the same bytes: replays are idempotent
    assert encode_cutout(c) == encode_cutout(c)


def test_multi_record_file_and_uncompressed_fits(tmp_path):
    path = tmp_path / "c.avro"
    cutouts = [radio_cutout(i) for i in range(3)]
    assert write_cutout_file(path, cutouts, compress=False) == 3
    recs = read_cutout_file(path)
    assert [r["id"] for r in recs] == ["src-0", "src-1", "src-2"] and recs[0]["stamps"][0]["encoding"] == "FITS"


def test_cutout_without_stamps_or_id_is_a_decode_error():
    rec = {"cutout_schema_version": "1", "id": "x", "survey": "FIRST", "instrument": None, "bands": [],
           "pixel_scale": None, "ra": None, "dec": None, "stamps": [], "truth": None, "dataset": None, "split": None,
           "observed_time": None, "extra": {}}
    import io

    buf = io.BytesIO()
    fastavro.writer(buf, parsed_schema(), [rec])
    with pytest.raises(DecodeError, match="no stamps"):
        Decoder().decode(RawMessage(buf.getvalue(), Origin(file="x")))


def test_bad_cutout_value_refused_before_encoding():
    with pytest.raises(ValueError, match="no image for band"):
        Cutout(id="x", survey="FIRST", bands=["1.4GHz"], images={})


@pytest.mark.parametrize("case, reason", [
    ({"survey": "NVSS"}, "survey"),
    ({"band": "3GHz"}, "band"),
    ({"scale": 1.0}, "pixel scale"),
])
def test_routing_rejects_with_a_reason(case, reason):
    c = radio_cutout(0, scale=case.get("scale", 1.8))
    if "survey" in case:
        c.survey = case["survey"]
    if "band" in case:
        c = Cutout(id="b", survey="FIRST", bands=[case["band"]], images={case["band"]: c.images["1.4GHz"]},
                   pixel_scale=1.8)
    assert reason in RADIO_SPEC.reject_reason(decode(c))


def test_routing_geometry_modes():
    small = decode(radio_cutout(0, size=120))
    exact = InputSpec(survey="FIRST", size=150, pixel_scale=1.8, channels=("1.4GHz",), geometry="exact")
    assert "exactly 150x150" in exact.reject_reason(small)
    assert RADIO_SPEC.accepts(small)  # crop mode NaN-pads smaller stamps of the same scale
    other_scale = decode(radio_cutout(0, size=100, scale=3.6))
    resample = InputSpec(survey="FIRST", size=150, pixel_scale=1.8, channels=("1.4GHz",), geometry="resample")
    assert not RADIO_SPEC.accepts(other_scale) and resample.accepts(other_scale)
    arr, errors = prepare_batch([other_scale], resample)
    assert errors == [None] and arr.shape == (1, 150, 150, 1)
    # 100 px at 3.6"/px resampled to 1.8"/px is 200 px: the centre 150 keeps the source in the middle
    rows, cols = np.nonzero(arr[0, :, :, 0] > 25)
    assert abs(rows.mean() - 74.5) < 1 and abs(cols.mean() - 74.5) < 1 and 100 <= len(rows) <= 196
    resize = InputSpec(survey="FIRST", size=64, channels=("1.4GHz",), geometry="resize")
    no_scale = decode(Cutout(id="n", survey="FIRST", bands=["1.4GHz"], images={"1.4GHz": np.ones((48, 48))}))
    assert resize.accepts(no_scale) and not resample.accepts(no_scale)


def test_training_and_serving_share_geometry():
    c = radio_cutout(1)
    served, _ = prepare_batch([decode(c)], RADIO_SPEC)
    trained = prepare_images(c.images["1.4GHz"][None], RADIO_SPEC)
    np.testing.assert_array_equal(served, trained)


class RadioDouble(Classifier):
    """A classifier double that calls FRII whatever it sees: the engine's truth scoring is what is tested."""

    family = "test"

    def __init__(self):
        super().__init__(ModelInfo("radio-double", "0.1", "test", Path(".")))

    @property
    def input_spec(self):
        return RADIO_SPEC

    @property
    def classes(self):
        return ("FRI", "FRII")

    @classmethod
    def load(cls, info):
        return cls()

    def predict_batch(self, batch):
        n = len(batch)
        return BatchPrediction(["FRII"] * n, np.tile([0.2, 0.8], (n, 1)), np.full(n, 0.5), self.classes)


def test_engine_scores_truth_and_reports_unrouted(tmp_path):
    cutouts = [radio_cutout(0, label="FRII"), radio_cutout(1, label="FRI"), radio_cutout(2, label="FRII"),
               radio_cutout(3, label=None)]
    nvss = radio_cutout(4)
    nvss.survey = "NVSS"
    msgs = [RawMessage(encode_cutout(c), Origin(file="c.avro", index=i)) for i, c in enumerate(cutouts + [nvss])]
    metrics = Metrics()
    sink = FileSink(tmp_path / "out.jsonl", "jsonl", tmp_path / "dead", "v")
    engine = Engine(IterSource(iter(msgs)), sink, [RadioDouble()], Decoder(), metrics, max_batch=16, max_wait_ms=10,
                    max_consecutive_failures=10, code_version="v", config_hash="h")
    stats = engine.run()
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(results) == 5 and stats.unrouted == 1
    by_id = {r["packet_id"]: r for r in results}
    assert by_id["src-0"]["predictions"][0]["correct"] is True
    assert by_id["src-1"]["predictions"][0]["correct"] is False
    assert by_id["src-3"]["predictions"][0]["correct"] is None and by_id["src-3"]["truth"] is None
    assert by_id["src-4"]["flags"] == ["unrouted"] and by_id["src-4"]["predictions"] == []
    assert by_id["src-0"]["schema_version"] == "2.1" and by_id["src-0"]["dataset"] == "test"
    reg = metrics.registry
    assert reg.get_sample_value("stampflow_truth_labelled_total", {"model": "radio-double"}) == 3
    assert reg.get_sample_value("stampflow_truth_correct_total", {"model": "radio-double"}) == 2
    assert reg.get_sample_value("stampflow_running_accuracy", {"model": "radio-double"}) == pytest.approx(2 / 3)
    assert reg.get_sample_value("stampflow_packets_unrouted_total", {"topic": "file"}) == 1


def test_ztf_stargal_cutouts_route_to_the_alert_model_and_score(tmp_path, data_dir):
    """ZTF cutouts replayed as packets reach the star/galaxy GP (same survey, pixel scale, science stamp)."""
    src = data_dir / "ztf_stargal" / "cutouts"
    if not src.is_dir():
        pytest.fail(f"real data missing: {src}")
    out = tmp_path / "sg.avro"
    assert main(["replay", str(src), "--format", "ztf-stargal", "--out", str(out), "--limit", "40", "--quiet"]) == 0
    assert main(["classify", str(out), "--out", str(tmp_path / "r.jsonl"), "--show", "0", "--quiet"]) == 0
    results = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(results) == 40 and all(r["predictions"][0]["model"] == "stargal" for r in results)
    correct = sum(r["predictions"][0]["correct"] for r in results)
    assert correct >= 34  # the model's hold-out accuracy is 0.987; these include training stamps


def test_registry_serves_every_cnn_family_with_one_class():
    from models.cnn import KerasCNN
    from models.registry import SERVING, serving_kind

    infos = Registry().list()
    cnn = {i.family for i in infos if serving_kind(i) == "keras"}
    assert cnn == {"radio", "deepmerge", "morphology", "spin"} and SERVING["keras"][1] is KerasCNN
    assert serving_kind(Registry().resolve("stargal")) == "gp"
    assert Registry().resolve("stargal").family == "stargal"
    spec = InputSpec.from_dict(RADIO_SPEC.as_dict())
    assert spec == RADIO_SPEC
    assert InputSpec.from_dict({"survey": "ZTF", "stamp_kinds": ["science"], "size": 20,
                                "pixel_scale": ZTF_PIXEL_SCALE}).stamp_kinds == (StampKind.SCIENCE,)


class TwoBandDouble(RadioDouble):
    @property
    def input_spec(self):
        return InputSpec(survey="HST", size=32, pixel_scale=0.06, channels=("F814W", "F160W"), geometry="crop")

    def predict_batch(self, batch):
        assert batch.shape[1:] == (32, 32, 2)
        return super().predict_batch(batch)


def test_multi_band_packets_through_the_engine(tmp_path):
    """Multi-band cutouts have no 'science' stamp: flags and preprocessing must use the declared bands."""
    rng = np.random.default_rng(0)
    images = {"F814W": rng.normal(size=(40, 40)).astype(np.float32), "F160W": np.full((30, 30), np.nan, np.float32)}
    images["F160W"][5:25, 5:25] = 1.0
    c = Cutout(id="hst-0", survey="HST", bands=["F814W", "F160W"], images=images, pixel_scale=0.06,
               truth_label="FRII")
    sink = FileSink(tmp_path / "out.jsonl", "jsonl", tmp_path / "dead", "v")
    msgs = [RawMessage(encode_cutout(c), Origin(file="c.avro", index=0))]
    Engine(IterSource(iter(msgs)), sink, [TwoBandDouble()], Decoder(), Metrics(), max_batch=4, max_wait_ms=10,
           max_consecutive_failures=10, code_version="v", config_hash="h").run()
    (r,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert r["predictions"][0]["correct"] is True and "nan_pixels" in r["flags"]
