"""The engine loop without a broker: routing, batching, dead letters, error budget, file sinks, provenance."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import fastavro
import numpy as np
import pytest

from models.base import BatchPrediction, Classifier, InputSpec, ModelInfo, ZTF_PIXEL_SCALE
from models.registry import Registry
from stream.cli import main
from stream.decode import Decoder
from stream.engine import Engine
from schemas.errors import ErrorBudgetExceeded
from stream.file_source import FileSource
from stream.metrics import Metrics
from schemas.packet import Origin, Packet, RawMessage, StampKind
from stream.sinks import FileSink
from stream.sources import IterSource


class PickyModel(Classifier):
    """Test double for the model seam: fails on one chosen stamp, to exercise failure isolation."""

    family = "test"

    def __init__(self, poison_sum: float | None = None):
        super().__init__(ModelInfo("picky", "0.0.1", "test", Path(".")))
        self.poison_sum = poison_sum
        self.calls: list[int] = []

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec("ZTF", (StampKind.SCIENCE,), 20, ZTF_PIXEL_SCALE)

    @property
    def classes(self):
        return ("a", "b")

    @classmethod
    def load(cls, info):
        return cls()

    def predict_batch(self, batch: np.ndarray) -> BatchPrediction:
        self.calls.append(len(batch))
        sums = batch.reshape(len(batch), -1).sum(axis=1)
        if self.poison_sum is not None and np.any(np.isclose(sums, self.poison_sum)):
            raise ValueError("poisoned stamp")
        probs = np.tile([0.25, 0.75], (len(batch), 1))
        return BatchPrediction(["b"] * len(batch), probs, np.full(len(batch), 0.5), self.classes)


def make_engine(items, tmp_path, classifiers, *, max_batch=8, budget=1000, fmt="jsonl"):
    sink = FileSink(tmp_path / f"out.{fmt}", fmt, tmp_path / "dead", "test-version")
    return Engine(IterSource(iter(items)), sink, classifiers, Decoder(), Metrics(), max_batch=max_batch,
                  max_wait_ms=50, max_consecutive_failures=budget, code_version="test-version",
                  config_hash="0123456789abcdef"), sink


def fixture_messages(fixtures_dir: Path) -> list:
    """The decodable fixture alerts (the schema-1.3 JPEG one is kept out; it has its own test)."""
    dec = Decoder()
    return [m for m in FileSource([fixtures_dir / "alerts"]).iter_messages()
            if isinstance(dec.decode_or_dead_letter(m), Packet)]


def test_real_model_on_fixtures_one_result_each(tmp_path, fixtures_dir):
    items = fixture_messages(fixtures_dir)
    assert len(items) >= 3
    clf = Registry().load("stargal")
    engine, sink = make_engine(items, tmp_path, [clf])
    stats = engine.run()
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == len(items) == stats.results
    for r in lines:
        assert r["predictions"][0]["model"] == "stargal" and r["predictions"][0]["model_version"] == clf.version
        assert r["predictions"][0]["label"] in ("star", "galaxy")
        assert abs(sum(r["predictions"][0]["probabilities"].values()) - 1) < 1e-6
        assert r["code_version"] == "test-version" and r["config_hash"] == "0123456789abcdef"
        assert r["source"]["file"] and r["alert_time"] > 1.2e9


def test_poisoned_packet_is_isolated_and_dead_lettered(tmp_path, fixtures_dir):
    items = fixture_messages(fixtures_dir)
    dec = Decoder()
    from models.preprocess import prepare_batch
    packets = [dec.decode(m) for m in items]
    arrays, _ = prepare_batch(packets, PickyModel().input_spec)
    model = PickyModel(poison_sum=float(arrays[1].sum()))
    engine, sink = make_engine(items, tmp_path, [model])
    engine.run()
    results = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(results) == len(items) - 1
    dead = [json.loads(x) for x in (tmp_path / "dead/dead_letters.jsonl").read_text().splitlines()]
    assert len(dead) == 1 and dead[0]["stage"] == "classify" and "poisoned" in dead[0]["error"]
    assert dead[0]["candid"] == packets[1].candid
    # The Avro dead-letter file keeps the original bytes.
    with open(tmp_path / "dead/dead_letters.avro", "rb") as fh:
        recs = list(fastavro.reader(fh))
    assert recs[0]["value"] == items[1].value
    assert len(model.calls) > 1  # the batch was split to find the culprit


def test_garbage_goes_to_dead_letters_and_worker_carries_on(tmp_path, fixtures_dir):
    good = fixture_messages(fixtures_dir)
    junk = [RawMessage(b"Obj\x01garbage", Origin(file="junk.avro")),
            RawMessage(b"\x00\x00\x00\x00\x07xx", Origin(file="wire.bin")),
            RawMessage(b"", Origin(file="empty"))]
    engine, sink = make_engine(junk + good, tmp_path, [PickyModel()])
    stats = engine.run()
    assert stats.results == len(good) and stats.dead_letters == 3
    dead = [json.loads(x) for x in (tmp_path / "dead/dead_letters.jsonl").read_text().splitlines()]
    assert {d["source"]["file"] for d in dead} == {"junk.avro", "wire.bin", "empty"}
    assert all(d["stage"] == "decode" and d["error"] for d in dead)
    assert [d["sha256"] for d in dead][0] == hashlib.sha256(b"Obj\x01garbage").hexdigest()


def test_error_budget_stops_after_consecutive_failures(tmp_path):
    junk = [RawMessage(b"Obj\x01bad%d" % i, Origin(file=f"j{i}")) for i in range(20)]
    engine, sink = make_engine(junk, tmp_path, [PickyModel()], max_batch=4, budget=6)
    with pytest.raises(ErrorBudgetExceeded, match="6 consecutive|8 consecutive"):
        engine.run()
    # What failed before the stop is durably in the dead-letter files, not lost.
    dead = (tmp_path / "dead/dead_letters.jsonl").read_text().splitlines()
    assert 6 <= len(dead) <= 8


def test_unrouted_packets_still_get_a_flagged_result(tmp_path, fixtures_dir):
    items = fixture_messages(fixtures_dir)
    engine, sink = make_engine(items, tmp_path, [])
    stats = engine.run()
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert stats.unrouted == len(items) == len(lines)
    assert all(r["flags"] == ["unrouted"] or "unrouted" in r["flags"] for r in lines)


def test_batches_close_on_size_and_on_time(tmp_path, fixtures_dir):
    items = fixture_messages(fixtures_dir)

    class Slow(IterSource):
        def poll(self, max_messages, timeout_s):
            time.sleep(min(timeout_s, 0.02))
            return super().poll(1, timeout_s)

    engine, _ = make_engine([], tmp_path, [PickyModel()], max_batch=2)
    engine.source = IterSource(iter(items))
    assert len(engine.next_batch()) == 2
    engine.source = Slow(iter(items * 20))
    engine.max_wait_s = 0.05
    t0 = time.monotonic()
    batch = engine.next_batch()
    engine.max_batch = 1000
    batch = engine.next_batch()
    assert 1 <= len(batch) < 20 and time.monotonic() - t0 < 1.0


def test_avro_results_file_is_readable(tmp_path, fixtures_dir):
    items = fixture_messages(fixtures_dir)
    engine, _ = make_engine(items * 3, tmp_path, [PickyModel()], max_batch=2, fmt="avro")
    engine.run()
    with open(tmp_path / "out.avro", "rb") as fh:
        recs = list(fastavro.reader(fh))
    assert len(recs) == 3 * len(items)
    assert recs[0]["predictions"][0]["probabilities"] == {"a": 0.25, "b": 0.75}


def test_cli_classify_and_bad_path(tmp_path, fixtures_dir, capsys):
    out = tmp_path / "r.jsonl"
    rc = main(["classify", str(fixtures_dir / "alerts"), "--out", str(out), "--quiet",
               "--dead-letters", str(tmp_path / "dl")])
    assert rc == 0
    captured = capsys.readouterr().out
    assert "objectId" in captured and "stargal" in captured
    summary = json.loads(captured[captured.index("{"):])
    assert summary["results"] == len(out.read_text().splitlines()) == 3
    assert summary["dead_letters"] == 1  # the schema-1.3 JPEG alert
    dead = json.loads((tmp_path / "dl" / "dead_letters.jsonl").read_text())
    assert "1.3" in dead["error"] and dead["stage"] == "decode"
    assert main(["classify", str(tmp_path / "nope.avro"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stampflow:") and "nope.avro" in err and "\n" not in err


def test_models_list(capsys):
    assert main(["models", "list", "--json"]) == 0
    infos = json.loads(capsys.readouterr().out)
    sg = [i for i in infos if i["name"] == "stargal"]
    assert sg and sg[0]["trained_on"] == "real" and sg[0]["metrics"]


def test_padded_and_nan_stamps_are_flagged_on_the_result(tmp_path, fixtures_dir):
    # 522193343315015001 (Ampel, schema 1.8) is an edge-of-CCD alert: 63x55 stamps with NaN pixels.
    item = next(m for m in FileSource([fixtures_dir / "alerts/522193343315015001.avro"]).iter_messages())
    engine, _ = make_engine([item], tmp_path, [Registry().load("stargal")])
    engine.run()
    result = json.loads((tmp_path / "out.jsonl").read_text())
    assert "padded_stamp" in result["flags"]
    clean = [m for m in fixture_messages(fixtures_dir) if "522193343315015001" not in str(m.origin.file)]
    engine, _ = make_engine(clean, tmp_path / "clean", [Registry().load("stargal")])
    engine.run()
    flags = [json.loads(x)["flags"] for x in (tmp_path / "clean/out.jsonl").read_text().splitlines()]
    assert all("padded_stamp" not in f for f in flags)


def test_zero_max_wait_still_batches_a_backlog(tmp_path, fixtures_dir):
    items = fixture_messages(fixtures_dir) * 10
    engine, _ = make_engine(items, tmp_path, [PickyModel()], max_batch=16)
    engine.max_wait_s = 0.0
    assert len(engine.next_batch()) == 16


def test_error_budget_counts_failures_in_consumption_order(tmp_path, fixtures_dir):
    good = fixture_messages(fixtures_dir)[0]
    bad = [RawMessage(b"Obj\x01bad%d" % i, Origin(file=f"j{i}")) for i in range(5)]
    # 5 failures, 1 success, 5 failures in one batch: never 6 in a row.
    engine, _ = make_engine(bad + [good] + bad, tmp_path, [PickyModel()], max_batch=64, budget=6)
    stats = engine.run()
    assert stats.dead_letters == 10 and stats.results == 1
    # 6 in a row inside one batch trips it, even though the batch also holds a success.
    engine, _ = make_engine([good] + bad + bad[:1], tmp_path / "b", [PickyModel()], max_batch=64, budget=6)
    with pytest.raises(ErrorBudgetExceeded):
        engine.run()


def test_model_returning_wrong_number_of_rows_is_contained(tmp_path, fixtures_dir):
    class Short(PickyModel):
        def predict_batch(self, batch):
            full = super().predict_batch(batch)
            return BatchPrediction(full.labels[:-1], full.probabilities[:-1], full.uncertainty[:-1], self.classes)

    items = fixture_messages(fixtures_dir)
    engine, _ = make_engine(items, tmp_path, [Short()])
    stats = engine.run()  # must not crash: every packet ends up dead-lettered at stage classify
    assert stats.results == 0 and stats.dead_letters == len(items)


def test_unavailable_dependency_stops_without_dead_lettering(tmp_path, fixtures_dir):
    from schemas.errors import TransientError

    class DownDecoder(Decoder):
        def decode(self, msg):
            raise TransientError("schema registry http://127.0.0.1:1 unreachable")

    items = fixture_messages(fixtures_dir)
    sink = FileSink(tmp_path / "out.jsonl", "jsonl", tmp_path / "dead", "v")
    engine = Engine(IterSource(iter(items)), sink, [PickyModel()], DownDecoder(), Metrics(), max_batch=8,
                    max_wait_ms=10, max_consecutive_failures=100, code_version="v", config_hash="0" * 16)
    with pytest.raises(TransientError):
        engine.run()
    assert not (tmp_path / "dead").exists()


def test_oversized_dead_letter_is_truncated_not_fatal():
    from schemas.packet import DeadLetter
    from stream.sinks import KafkaSink

    sink = KafkaSink({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, "r", "d", "v", delivery_timeout_s=1)
    big = DeadLetter(b"x" * 3_000_000, Origin(topic="t", partition=0, offset=1), "read", "too big", "E")
    fitted = sink._fit(big)
    assert len(fitted.value) < 1_000_000 and "original 3000000 bytes" in fitted.error and "sha256" in fitted.error
    sink.write_dead_letters([big])  # queued locally without a size error
    small = DeadLetter(b"abc", big.origin, "read", "small", "E")
    assert sink._fit(small) is small


def test_cli_classify_with_no_alert_files_fails_clearly(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an alert")
    assert main(["classify", str(tmp_path / "in"), "--quiet", "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no alerts found" in err and "1 files skipped" in err and "\n" not in err


def test_lag_series_of_revoked_partitions_are_removed(tmp_path):
    class LagSource(IterSource):
        def __init__(self):
            super().__init__(iter([]))
            self.lags = {("alerts", 0): 5, ("alerts", 1): 7}

        def lag(self):
            return dict(self.lags)

    src = LagSource()
    metrics = Metrics()
    engine = Engine(src, FileSink(tmp_path / "o.jsonl", "jsonl", tmp_path / "d", "v"), [], Decoder(), metrics,
                    max_batch=4, max_wait_ms=1, max_consecutive_failures=10, code_version="v", config_hash="h")
    engine.lag.refresh(src, force=True)
    get = metrics.registry.get_sample_value
    assert get("stampflow_consumer_lag", {"topic": "alerts", "partition": "1"}) == 7
    src.lags = {("alerts", 0): 2}  # partition 1 revoked in a rebalance
    engine.lag.refresh(src, force=True)
    assert get("stampflow_consumer_lag", {"topic": "alerts", "partition": "0"}) == 2
    assert get("stampflow_consumer_lag", {"topic": "alerts", "partition": "1"}) is None
