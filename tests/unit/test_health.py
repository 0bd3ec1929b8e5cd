"""The worker's HTTP server: /metrics plus the probes, on one real socket."""
from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.metrics import Metrics


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.fixture
def served():
    m = Metrics()
    port = m.serve("127.0.0.1", 0)
    try:
        yield m, port
    finally:
        m.close()


def test_metrics_endpoint_serves_the_registry(served):
    m, port = served
    m.consumed.labels("ztf").inc(7)
    code, body, headers = get(port, "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["stampflow_messages_consumed"].samples[0].value == 7
    assert "process_resident_memory_bytes" in families


def test_metrics_endpoint_negotiates_gzip_and_openmetrics(served):
    m, port = served
    m.consumed.labels("ztf").inc()
    code, body, headers = get(port, "/metrics", {"Accept-Encoding": "gzip"})
    assert code == 200 and headers.get("Content-Encoding") == "gzip"
    assert b"stampflow_messages_consumed_total" in gzip.decompress(body)
    code, body, headers = get(port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_probes_follow_the_health_state(served):
    m, port = served
    h = m.health
    # Fresh worker: alive (the clock starts at construction), not ready (models still loading).
    assert get(port, "/livez")[0] == 200
    code, body, _ = get(port, "/readyz")
    assert code == 503 and b"models loading" in body and b"no partitions assigned" in body
    code, body, _ = get(port, "/healthz")
    state = json.loads(body)
    assert code == 503 and state["live"] is True and state["ready"] is False

    h.models_loaded = True
    code, body, _ = get(port, "/readyz")
    assert code == 503 and body == b"not ready: no partitions assigned\n"
    h.assigned = True
    assert get(port, "/readyz")[:2] == (200, b"ok\n")
    code, body, headers = get(port, "/healthz")
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) | {"seconds_since_poll": 0} == {"live": True, "ready": True, "models_loaded": True,
                                                            "assigned": True, "stopping": False,
                                                            "seconds_since_poll": 0}

    # A stop signal drops readiness (the drain) while the worker is still alive.
    h.stopping = True
    assert get(port, "/readyz")[0] == 503
    assert get(port, "/livez")[0] == 200
    h.stopping = False

    # A poll loop that has not turned within live_timeout_s: liveness fails, and so does /healthz.
    h.live_timeout_s = 0.05
    time.sleep(0.1)
    code, body, _ = get(port, "/livez")
    assert code == 503 and body.startswith(b"poll loop has not turned for")
    assert get(port, "/healthz")[0] == 503
    assert get(port, "/readyz")[0] == 200  # readiness is about traffic, liveness about restarts
    h.beat()
    assert get(port, "/livez")[0] == 200


def test_unknown_paths_and_methods_are_refused(served):
    _, port = served
    assert get(port, "/livezz")[0] == 404
    req = urllib.request.Request(f"http://127.0.0.1:{port}/livez", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 405


def test_ready_gauge_mirrors_health(served):
    m, _ = served
    m.set_ready_gauge()
    assert m.ready._value.get() == 0
    m.health.models_loaded = m.health.assigned = True
    m.set_ready_gauge()
    assert m.ready._value.get() == 1


def test_port_in_use_is_an_oserror_and_close_frees_the_port():
    a = Metrics()
    port = a.serve("127.0.0.1", 0)
    b = Metrics()
    with pytest.raises(OSError):
        b.serve("127.0.0.1", port)
    a.close()
    # The worker maps the OSError to a one-line error; after close the port can be bound again.
    c = Metrics()
    try:
        assert c.serve("127.0.0.1", port) == port
    finally:
        c.close()


def test_prime_creates_the_series_at_zero_before_traffic():
    """rate() ignores the value a series is born with, so the worker creates its series before any batch."""
    m = Metrics()
    m.prime(["ztf-alerts", "^ztf_.*"], ["stargal"])
    text = generate_latest(m.registry).decode()
    assert 'stampflow_messages_consumed_total{topic="ztf-alerts"} 0.0' in text
    assert 'stampflow_packets_classified_total{model="stargal",topic="ztf-alerts"} 0.0' in text
    assert 'stampflow_dead_letters_total{stage="decode",topic="ztf-alerts"} 0.0' in text
    assert 'stampflow_end_to_end_latency_seconds_count{reference="alert"} 0.0' in text
    assert 'stampflow_inference_seconds_count{model="stargal"} 0.0' in text
    assert "^ztf_" not in text  # a pattern subscription names no topic
