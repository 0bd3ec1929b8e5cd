"""Archival cutouts through the real broker: Griese FIRST images replayed as cutout packets, served by the
bundled radio model next to the star/galaxy GP, one result per packet, truth scored in Prometheus."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from confluent_kafka import Producer

from schemas.cutout_packet import Cutout, encode_cutout
from tests.integration.conftest import REPO, clean_env, decode_results, metric_value, read_topic

pytestmark = pytest.mark.integration

N_GRIESE = 40
N_STARGAL = 10


def replay_archive(bootstrap: str, topic: str, path, fmt: str, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "stream", "replay", str(path), "--format", fmt, "--topic", topic, "--quiet", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=clean_env(STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS=bootstrap))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_griese_packets_one_result_each_with_truth_metrics(kafka_bootstrap, topics, start_worker, data_dir):
    griese = data_dir / "radio" / "first_galaxy_dataset" / "galaxy_data_trainvalid_h5.zip"
    stargal = data_dir / "ztf_stargal" / "cutouts"
    sent = replay_archive(kafka_bootstrap, topics["input"], griese, "griese", "--set", "split=valid",
                          "--limit", str(N_GRIESE))
    assert sent["messages"] == N_GRIESE and sent["with_truth"] == N_GRIESE
    sent = replay_archive(kafka_bootstrap, topics["input"], stargal, "ztf-stargal", "--limit", str(N_STARGAL))
    assert sent["messages"] == N_STARGAL
    # NVSS stamps: no served model declares NVSS, so they must come back flagged unrouted, not vanish
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3):
        img = np.random.default_rng(i).normal(size=(150, 150)).astype(np.float32)
        c = Cutout(id=f"nvss-{i}", survey="NVSS", bands=["1.4GHz"], images={"1.4GHz": img}, pixel_scale=15.0)
        p.produce(topics["input"], encode_cutout(c), key=c.id.encode())
    assert p.flush(30) == 0
    total = N_GRIESE + N_STARGAL + 3

    worker = start_worker(STAMPFLOW_MODELS__NAMES='["radio-first", "stargal"]', STAMPFLOW_BATCH__MAX_SIZE="16")
    worker.wait_metrics()
    results = decode_results(read_topic(kafka_bootstrap, topics["results"], expect=total, timeout=240))
    assert len(results) == total, worker.log()
    ids = [r["packet_id"] for r in results]
    assert len(set(ids)) == total  # one result per packet

    radio = [r for r in results if r["survey"] == "FIRST"]
    assert len(radio) == N_GRIESE
    for r in radio:
        (pred,) = r["predictions"]
        assert pred["model"] == "radio-first" and pred["label"] in pred["probabilities"]
        assert r["truth"]["label"] in ("FRI", "FRII", "Compact", "Bent") and pred["correct"] is not None
        assert r["dataset"] and r["candid"] > 0 and r["objectId"] == r["packet_id"]
    ztf = [r for r in results if r["survey"] == "ZTF"]
    assert len(ztf) == N_STARGAL and all(r["predictions"][0]["model"] == "stargal" for r in ztf)
    unrouted = [r for r in results if r["survey"] == "NVSS"]
    assert len(unrouted) == 3 and all(r["flags"] == ["unrouted"] and not r["predictions"] for r in unrouted)

    correct = sum(r["predictions"][0]["correct"] for r in radio)
    deadline = time.time() + 30
    while time.time() < deadline:
        text = worker.metrics()
        if metric_value(text, "stampflow_truth_labelled_total", model="radio-first") == N_GRIESE:
            break
        time.sleep(0.5)
    assert metric_value(text, "stampflow_truth_labelled_total", model="radio-first") == N_GRIESE
    assert metric_value(text, "stampflow_truth_correct_total", model="radio-first") == correct
    assert metric_value(text, "stampflow_running_accuracy", model="radio-first") == pytest.approx(correct / N_GRIESE)
    assert metric_value(text, "stampflow_packets_unrouted_total") == 3
    assert correct >= 0.6 * N_GRIESE  # the bundled model scores far better on the valid part; this is a floor
