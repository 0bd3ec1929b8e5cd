"""`stampflow view --kafka` against the real broker: a worker classifies the bundled real alerts from a topic, then
the viewer reads the result topic, the input topic and the dead-letter topic and serves them."""
from __future__ import annotations

import hashlib
import io
import json
import signal
import urllib.request

import pytest
from PIL import Image

from tests.integration.conftest import REPO, read_topic, worker_env
from tests.integration.test_serve_kafka import replay
from tests.viewer_harness import start_view

pytestmark = pytest.mark.integration

ALERTS = REPO / "tests" / "fixtures" / "alerts"


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as res:
        return res.read()


def test_view_reads_result_input_and_dead_letter_topics(kafka_bootstrap, topics, start_worker, tmp_path):
    sent = replay(kafka_bootstrap, topics["input"], [ALERTS])
    assert sent["messages"] == 4
    worker = start_worker()
    worker.wait_metrics()
    assert len(read_topic(kafka_bootstrap, topics["results"], expect=3, timeout=180)) == 3
    assert len(read_topic(kafka_bootstrap, topics["dead"], expect=1, timeout=60)) == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait(90) == 0

    env = worker_env(kafka_bootstrap, topics, tmp_path)  # the worker's own settings name the three topics
    proc, url = start_view(["--kafka"], env=env)
    try:
        meta = json.loads(get(url + "/api/meta"))
        assert (meta["results"], meta["dead_letters"], meta["unmatched"]) == (3, 1, 0)
        rows = json.loads(get(url + "/api/rows"))["rows"]
        assert {r["objectId"] for r in rows} == {"ZTF18aaxmirj", "ZTF19acxxwrs", "ZTF19acyjzeo"}
        for r in rows:  # matched by topic/partition/offset: every row has its three stamps
            assert r["stamps"] == ["science", "template", "difference"]
            assert Image.open(io.BytesIO(get(f"{url}/stamp/{r['id']}/template.png"))).size[0] > 0
        detail = json.loads(get(f"{url}/api/result/{rows[0]['id']}"))
        assert detail["result"]["source"]["topic"] == topics["input"]
        assert "sgscore1" in dict(detail["packet"]["fields"])
        dead = json.loads(get(url + "/api/dead"))["dead_letters"][0]
        assert dead["origin"].startswith(topics["input"] + "[") and dead["stage"] == "decode"
        original = (ALERTS / "121540793515135000.avro").read_bytes()
        assert hashlib.sha256(get(f"{url}/dead/{dead['id']}/bytes")).digest() == hashlib.sha256(original).digest()
    finally:
        proc.terminate()
        proc.wait(10)
