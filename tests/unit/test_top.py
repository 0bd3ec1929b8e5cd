"""`stampflow top`: the arithmetic on real exposition text from a real Metrics registry, and the command."""
from __future__ import annotations

import argparse
import math
import socket

import pytest
from prometheus_client import generate_latest

from stream.cli import main
from schemas.errors import StampflowError
from stream.metrics import Metrics
from stream.fmt import fmt_seconds
from stream.prom_query import parse_duration, rate_window
from stream.prom_samples import counter_deltas, histogram_quantile, parse_exposition
from stream.top import run_top
from stream.top_view import view_from_scrapes


def exposition(m: Metrics):
    return parse_exposition(generate_latest(m.registry).decode())


def test_histogram_quantile_matches_prometheus_estimates():
    # 10 observations <= 1, 10 in (1, 2], none above: p50 is the 1 s boundary, p75 halfway through (1, 2].
    b = [(1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)]
    assert histogram_quantile(0.5, b) == 1.0
    assert histogram_quantile(0.75, b) == 1.5
    assert histogram_quantile(0.25, b) == 0.5  # the first bucket interpolates from 0
    # A rank in +Inf can only say "above the highest finite bound".
    assert histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_counter_deltas_treat_a_decrease_as_a_restart():
    prev = {"c_total": {(("topic", "a"),): 100.0, (("topic", "b"),): 5.0}}
    cur = {"c_total": {(("topic", "a"),): 20.0, (("topic", "b"),): 9.0, (("topic", "c"),): 3.0}}
    assert counter_deltas(prev, cur, "c_total", ["topic"]) == {("a",): 20.0, ("b",): 4.0, ("c",): 3.0}
    assert counter_deltas(prev, cur, "c_total") == {(): 27.0}


def test_view_from_two_real_scrapes():
    m = Metrics()
    m.health.models_loaded = m.health.assigned = True
    m.set_ready_gauge()
    m.model_info.labels("stargal", "1.0.0", "muygpys").set(1)
    m.consumed.labels("ztf").inc(100)
    m.consumed.labels("rubin").inc(40)
    m.published.labels("ztf").inc(90)
    m.dead_lettered.labels("ztf", "decode").inc(10)
    for _ in range(50):
        m.latency.labels("alert").observe(86400 * 3)  # an archival replay earlier in the run
        m.latency.labels("ingest").observe(4.0)
    m.inference.labels("stargal").observe(2.0)
    m.lag.labels("ztf", "10").set(7)
    m.lag.labels("ztf", "2").set(5)
    m.running_accuracy.labels("stargal").set(0.9)
    m.truth_labelled.labels("stargal").inc(30)
    before = exposition(m)

    first = view_from_scrapes(None, before, 0.0)
    assert first.throughput == {"rubin": None, "ztf": None} and first.total_rate is None
    assert first.latency_window == {"alert": "since start", "ingest": "since start"}
    assert first.state == {"ready": "yes"}

    m.consumed.labels("ztf").inc(30)
    m.published.labels("ztf").inc(28)
    m.dead_lettered.labels("ztf", "decode").inc(2)
    m.classified.labels("ztf", "stargal").inc(28)
    for _ in range(20):
        m.latency.labels("ingest").observe(0.2)
    m.inference.labels("stargal").observe(0.004)
    m.inference.labels("stargal").observe(0.006)
    v = view_from_scrapes(before, exposition(m), 2.0, source="w", state={"live": "yes"})

    assert v.throughput == {"rubin": 0.0, "ztf": 15.0} and v.total_rate == 15.0
    assert v.consumed == {"rubin": 40.0, "ztf": 130.0}
    assert v.published_per_s == 14.0 and v.published == 118.0
    assert v.dead == {("ztf", "decode"): (12.0, 1.0)}
    assert list(v.lag.items()) == [(("ztf", "2"), 5.0), (("ztf", "10"), 7.0)] and v.total_lag == 12
    # Only the new observations count where there were some: ingest is fast now although it was 4 s before.
    assert v.latency_window == {"alert": "since start", "ingest": "last 2.0 s"}
    assert v.latency["ingest"][0.5] == pytest.approx(0.175)  # (0.1, 0.25] bucket, linear interpolation
    assert v.latency["alert"][0.5] > 86400
    s = v.models["stargal"]
    assert s.classified_per_s == 14.0 and s.classified == 28.0
    assert s.mean_s == pytest.approx(0.005)  # (0.004 + 0.006) / 2, not dragged up by the old 2 s call
    assert 0.005 < s.p95_s <= 0.01
    assert s.accuracy == 0.9 and s.labelled == 30.0 and s.rmse is None
    assert v.state == {"live": "yes", "ready": "yes"} and v.rss_bytes > 0

    # A restarted worker (counters back near zero) does not produce negative rates.
    fresh = Metrics()
    fresh.consumed.labels("ztf").inc(4)
    assert view_from_scrapes(exposition(m), exposition(fresh), 2.0).throughput["ztf"] == 2.0


def test_formatting_and_durations():
    assert fmt_seconds(0.0123) == "12.3 ms" and fmt_seconds(90) == "90.0 s" and fmt_seconds(86400 * 3) == "3.0 d"
    assert fmt_seconds(None) == "-" and fmt_seconds(math.nan) == "-"
    assert parse_duration("1m30s") == 90 and parse_duration("15s") == 15 and parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_duration("15 seconds")
    assert rate_window(15) == "60s" and rate_window(1, 5) == "5s"


def args(**kw) -> argparse.Namespace:
    base = {"url": "http://127.0.0.1:9108/metrics", "prometheus": None, "job": "stampflow", "interval": 0.2,
            "once": True}
    return argparse.Namespace(**(base | kw))


def test_once_prints_one_frame_from_a_live_worker_endpoint(capsys):
    m = Metrics()
    port = m.serve("127.0.0.1", 0)
    try:
        m.health.models_loaded = True
        m.consumed.labels("ztf-alerts").inc(3)
        m.lag.labels("ztf-alerts", "0").set(42)
        assert run_top(args(url=f"http://127.0.0.1:{port}/metrics")) == 0
    finally:
        m.close()
    out = capsys.readouterr().out
    assert "ztf-alerts" in out and "alerts/s" in out and "consumer lag (total 42)" in out
    assert "live: yes" in out and "ready: no" in out  # no partitions assigned: /readyz answers 503


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_worker_is_one_clear_line(capsys):
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(StampflowError, match=r"^cannot reach http://127\.0\.0\.1:\d+/metrics: "):
        run_top(args(url=url))
    assert main(["top", "--url", url, "--once"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"stampflow: cannot reach {url}")


def test_a_url_that_is_not_a_worker_says_so():
    m = Metrics()
    port = m.serve("127.0.0.1", 0)
    try:
        with pytest.raises(StampflowError, match="does not serve stampflow metrics .*--prometheus"):
            run_top(args(url=f"http://127.0.0.1:{port}/livez"))
        with pytest.raises(StampflowError, match="answered HTTP 404"):
            run_top(args(url=f"http://127.0.0.1:{port}/nope"))
        # A worker is not a Prometheus server either.
        with pytest.raises(StampflowError, match="is not a Prometheus server"):
            run_top(args(prometheus=f"http://127.0.0.1:{port}"))
    finally:
        m.close()


def test_bad_interval_is_refused():
    with pytest.raises(StampflowError, match="--interval must be positive"):
        run_top(args(interval=0))
