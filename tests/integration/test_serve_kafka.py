"""End to end through the real broker: replay every shared real alert, serve, check results, dead letters,
offsets, metrics, kill -9 recovery, SIGTERM and exactly-once mode."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from stream.file_source import FileSource
from tests.integration.conftest import (REPO, clean_env, committed_offsets, decode_dead_letters, decode_results,
                                        end_offsets, free_port, metric_value, read_topic)

pytestmark = pytest.mark.integration


def replay(bootstrap: str, topic: str, paths: list[Path], *extra: str) -> dict:
    cmd = [sys.executable, "-m", "stream", "replay", *map(str, paths), "--topic", topic, "--quiet", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=clean_env(STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS=bootstrap))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bad_inputs(data_dir: Path) -> dict[str, str]:
    """sha256 -> file for the inputs that must be dead-lettered: corrupt files and the JPEG-stamp legacy alert."""
    files = sorted((data_dir / "ztf_alerts/ampel/ztf_public_20180601_corrupt").glob("*.avro"))
    files.append(data_dir / "ztf_alerts/ampel/121540793515135000.avro")
    return {hashlib.sha256(f.read_bytes()).hexdigest(): f.name for f in files}


def all_alert_paths(data_dir: Path) -> list[Path]:
    return [data_dir / "ztf_alerts", data_dir / "lsst_alerts"]


def test_every_real_alert_gets_one_result_and_bad_ones_are_dead_lettered(kafka_bootstrap, topics, start_worker,
                                                                        data_dir):
    sent = replay(kafka_bootstrap, topics["input"], all_alert_paths(data_dir))
    n = sent["messages"]
    assert n > 300

    worker = start_worker(STAMPFLOW_BATCH__MAX_SIZE="64")
    worker.wait_metrics()
    bad = bad_inputs(data_dir)
    dead = decode_dead_letters(read_topic(kafka_bootstrap, topics["dead"], expect=len(bad), timeout=180))
    results = decode_results(read_topic(kafka_bootstrap, topics["results"], expect=n - len(bad), timeout=180))

    # Dead letters: exactly the corrupt and legacy packets, with their original bytes and origin.
    assert sorted(hashlib.sha256(d["value"]).hexdigest() for d in dead) == sorted(bad)
    for d in dead:
        assert d["source"]["topic"] == topics["input"] and d["source"]["offset"] is not None
        assert d["stage"] in ("read", "decode") and d["error"]
    legacy = [d for d in dead if bad[hashlib.sha256(d["value"]).hexdigest()].startswith("1215")]
    assert "1.3" in legacy[0]["error"] and "JPEG" in legacy[0]["error"]

    # Exactly one result per decodable message, each traceable to its offset, model and config.
    coords = Counter((r["source"]["partition"], r["source"]["offset"]) for r in results)
    assert len(results) == n - len(bad)
    assert max(coords.values()) == 1
    ztf = [r for r in results if r["survey"] == "ZTF"]
    # stargal 2.0.0 reads the template stamp: the only ZTF packets without one are Fink's four labelled
    # science-only example stamps, which come back unrouted (still one result each).
    unrouted = [r for r in ztf if "unrouted" in r["flags"]]
    assert len(unrouted) <= 4 and all("no_candidate" in r["flags"] and not r["predictions"] for r in unrouted)
    ztf = [r for r in ztf if "unrouted" not in r["flags"]]
    assert ztf and all(r["predictions"] and r["predictions"][0]["model"] == "stargal" for r in ztf)
    assert all(r["code_version"] and len(r["config_hash"]) == 16 for r in results)
    labels = Counter(r["predictions"][0]["label"] for r in ztf)
    assert set(labels) <= {"star", "galaxy"} and len(labels) == 2, labels
    assert {r["survey"] for r in results} >= {"ZTF", "LSST"}
    assert all("unrouted" in r["flags"] for r in results if r["survey"] == "LSST")

    # Metrics agree with what landed on the topics.
    deadline = time.time() + 30
    while time.time() < deadline:
        text = worker.metrics()
        if metric_value(text, "stampflow_results_published_total") >= len(results):
            break
        time.sleep(0.5)
    t = topics["input"]
    assert metric_value(text, "stampflow_messages_consumed_total", topic=t) == n
    assert metric_value(text, "stampflow_results_published_total", topic=t) == len(results)
    assert metric_value(text, "stampflow_dead_letters_total", topic=t) == len(bad)
    assert metric_value(text, "stampflow_packets_classified_total", topic=t, model="stargal") == len(ztf)
    assert metric_value(text, "stampflow_packets_unrouted_total", topic=t) == len(results) - len(ztf)
    assert metric_value(text, "stampflow_end_to_end_latency_seconds_count", reference="ingest") == len(results)
    assert metric_value(text, "stampflow_batch_size_count") >= 1
    assert metric_value(text, "stampflow_model_info", model="stargal") == 1
    assert 'stampflow_inference_seconds_count{model="stargal"}' in text
    time.sleep(1.5)  # one lag refresh after the last commit
    assert metric_value(worker.metrics(), "stampflow_consumer_lag", topic=t) == 0

    # SIGTERM: clean exit, offsets committed up to the end of every partition.
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()
    assert committed_offsets(kafka_bootstrap, f"it-{t}", t) == end_offsets(kafka_bootstrap, t)


def test_kill_minus_nine_loses_nothing(kafka_bootstrap, topics, start_worker, data_dir):
    batch = 16
    paths = [data_dir / "ztf_alerts/ampel/ztf_public_20180819_mod1000.tar.gz",
             data_dir / "ztf_alerts/fink-client/ztf/part-3-305711.avro"]
    n = FileSource(paths).count()
    # a short session timeout: the group notices the killed member in seconds instead of the default 45 s
    first = start_worker(STAMPFLOW_BATCH__MAX_SIZE=str(batch), STAMPFLOW_BATCH__MAX_WAIT_MS="20",
                         STAMPFLOW_KAFKA__CONSUMER='{"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}')
    first.wait_metrics()
    # Feed at a fixed rate while the worker runs, so the kill lands mid-stream however fast this machine is
    # (a backlog is drained in a fraction of a second).
    feeder = subprocess.Popen([sys.executable, "-m", "stream", "replay", *map(str, paths), "--topic", topics["input"],
                               "--rate", "100", "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=clean_env(STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and metric_value(first.metrics(), "stampflow_results_published_total") < n // 3:
            time.sleep(0.05)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        out, err = feeder.communicate(timeout=120)
    assert feeder.returncode == 0, err.decode()[-2000:]
    assert json.loads(out.decode().strip().splitlines()[-1])["messages"] == n
    done_before = len(read_topic(kafka_bootstrap, topics["results"], timeout=20, idle=2))
    assert 0 < done_before < n, "the kill should land mid-stream"

    second = start_worker(STAMPFLOW_BATCH__MAX_SIZE=str(batch))
    second.wait_metrics()
    results = decode_results(read_topic(kafka_bootstrap, topics["results"], expect=n, timeout=180))
    coords = Counter((r["source"]["partition"], r["source"]["offset"]) for r in results)
    assert len(coords) == n, "every message must have at least one result"
    duplicates = sum(c - 1 for c in coords.values())
    # A kill can repeat at most the batch in flight (one per partition batch is still <= one batch overall).
    assert duplicates <= batch, duplicates
    second.signal(signal.SIGTERM)
    assert second.wait(60) == 0, second.log()


def test_exactly_once_mode_has_no_duplicates(kafka_bootstrap, topics, start_worker, data_dir):
    sent = replay(kafka_bootstrap, topics["input"], [data_dir / "ztf_alerts/fink-client/ztf/part-3-305711.avro",
                                                     data_dir / "ztf_alerts/ampel/ztf_public_20180601_corrupt"])
    n = sent["messages"]
    worker = start_worker(STAMPFLOW_KAFKA__EXACTLY_ONCE="true", STAMPFLOW_BATCH__MAX_SIZE="8",
                          STAMPFLOW_KAFKA__TRANSACTIONAL_ID=f"it-{topics['input']}")
    worker.wait_metrics()
    results = decode_results(read_topic(kafka_bootstrap, topics["results"], expect=n - 5, timeout=120))
    dead = read_topic(kafka_bootstrap, topics["dead"], expect=5, timeout=60)
    assert len(results) == n - 5 and len(dead) == 5
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()
    t = topics["input"]
    assert committed_offsets(kafka_bootstrap, f"it-{t}", t) == end_offsets(kafka_bootstrap, t)


def test_start_from_timestamp_skips_older_messages(kafka_bootstrap, topics, start_worker, data_dir):
    old = replay(kafka_bootstrap, topics["input"], [data_dir / "ztf_alerts/fink-client/ZTF19acihgng.avro"])
    time.sleep(1.0)
    cut_ms = int(time.time() * 1000)
    time.sleep(0.2)
    new = replay(kafka_bootstrap, topics["input"], [data_dir / "ztf_alerts/fink-client/ztf/part-3-305711.avro"])
    worker = start_worker(STAMPFLOW_KAFKA__START_TIMESTAMP_MS=str(cut_ms))
    worker.wait_metrics()
    results = decode_results(read_topic(kafka_bootstrap, topics["results"], expect=new["messages"], timeout=120))
    assert len(results) == new["messages"]
    assert old["messages"] == 1 and all(r["objectId"] != "ZTF19acihgng" for r in results)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0


def test_unreachable_broker_is_one_clear_line(tmp_path):
    env = clean_env(STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    proc = subprocess.run([sys.executable, "-m", "stream", "serve"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("stampflow: cannot reach Kafka at 127.0.0.1:")
    assert "Traceback" not in proc.stderr


def test_sigterm_mid_stream_commits_exactly_what_was_published(kafka_bootstrap, topics, start_worker, data_dir):
    sent = replay(kafka_bootstrap, topics["input"], [data_dir / "ztf_alerts/fink-client"], "--repeat", "6")
    n = sent["messages"]
    worker = start_worker(STAMPFLOW_BATCH__MAX_SIZE="16", STAMPFLOW_BATCH__MAX_WAIT_MS="20")
    worker.wait_metrics()
    deadline = time.time() + 120
    while time.time() < deadline and metric_value(worker.metrics(), "stampflow_results_published_total") < n // 4:
        time.sleep(0.02)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()
    assert "finishing the batch in flight" in worker.log()
    results = decode_results(read_topic(kafka_bootstrap, topics["results"], timeout=30, idle=2))
    t = topics["input"]
    committed = committed_offsets(kafka_bootstrap, f"it-{t}", t)
    assert 0 < len(results) < n, "SIGTERM should land mid-stream"
    # Every committed offset has its result, and no result lies beyond what was committed.
    done = {(r["source"]["partition"], r["source"]["offset"]) for r in results}
    assert len(done) == len(results)
    expected = {(p, o) for p, end in committed.items() for o in range(end)}
    assert done == expected
