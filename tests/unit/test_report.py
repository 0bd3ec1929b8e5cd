"""The metrics log (stream/metrics_log.py) and `stampflow report --metrics-log` over it."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from stream.cli import main
from schemas.errors import StampflowError
from stream.metrics import Metrics
from stream.metrics_log import MetricsLogger, snapshot_line
from stream.report import load_metrics_log, parse_time, run_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] >= 800 and img.size[1] >= 300


def report(log: Path, out: Path, **kw) -> dict:
    args = argparse.Namespace(**({"metrics_log": str(log), "prometheus": None, "start": None, "end": None,
                                  "step": 5.0, "job": "stampflow", "out": str(out)} | kw))
    assert run_report(args) == 0
    return json.loads((out / "summary.json").read_text())


def test_logger_writes_a_baseline_periodic_and_final_snapshot(tmp_path):
    m = Metrics()
    log = tmp_path / "sub" / "metrics.jsonl"
    logger = MetricsLogger(m.registry, log, 0.05).start()
    for _ in range(6):
        m.consumed.labels("ztf").inc(10)
        m.latency.labels("ingest").observe(0.3)
        time.sleep(0.04)
    m.consumed.labels("ztf").inc(5)  # after the last periodic line: only the final line has it
    logger.stop()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == logger.lines_written >= 4
    assert [x["ts"] for x in lines] == sorted(x["ts"] for x in lines)

    def value(rec, name, **labels):
        return sum(v for n, l, v in rec["samples"] if n == name and all(l.get(k) == x for k, x in labels.items()))

    assert value(lines[0], "stampflow_messages_consumed_total") == 0  # the baseline, before any work
    assert value(lines[-1], "stampflow_messages_consumed_total", topic="ztf") == 65
    names = {n for n, _, _ in lines[-1]["samples"]}
    assert {"stampflow_end_to_end_latency_seconds_bucket", "stampflow_end_to_end_latency_seconds_sum",
            "stampflow_end_to_end_latency_seconds_count", "process_resident_memory_bytes"} <= names
    assert not any(n.endswith("_created") or n.startswith("python_") for n in names)
    assert value(lines[-1], "stampflow_end_to_end_latency_seconds_bucket", reference="ingest", le="0.5") == 6

    summary = report(log, tmp_path / "report")
    assert summary["totals"]["consumed"] == 65 and summary["totals"]["consumed_by_topic"] == {"ztf": 65}
    assert summary["latency_s"]["ingest"]["observations"] == 6
    assert summary["peak_rss_bytes"] > 10e6
    assert_png(tmp_path / "report" / "throughput.png")
    assert_png(tmp_path / "report" / "latency.png")


def write_run(path: Path) -> None:
    """A replay, snapshot by snapshot at chosen times: idle, 3 busy intervals of 10 s, idle, then a restart."""
    m = Metrics()
    m.model_info.labels("stargal", "1.0.0", "muygpys").set(1)
    lines = [snapshot_line(m.registry, now=1000.0), snapshot_line(m.registry, now=1010.0)]
    for t, n in ((1020.0, 100), (1030.0, 300), (1040.0, 200)):
        m.consumed.labels("ztf").inc(n)
        m.consumed.labels("rubin").inc(n // 10)
        m.published.labels("ztf").inc(n - 2)
        m.dead_lettered.labels("ztf", "decode").inc(2)
        m.classified.labels("ztf", "stargal").inc(n - 2)
        for _ in range(n - 2):
            m.latency.labels("ingest").observe(0.2)  # (0.1, 0.25] bucket
        m.latency.labels("ingest").observe(7.0)      # (5, 10] bucket
        m.latency.labels("alert").observe(86400 * 3)
        lines.append(snapshot_line(m.registry, now=t))
    lines.append(snapshot_line(m.registry, now=1050.0))
    # A restarted worker appends to the same file: a new pid, counters from zero.
    again = Metrics()
    again.consumed.labels("ztf").inc(50)
    rec = json.loads(snapshot_line(again.registry, now=1060.0))
    rec["pid"] += 1
    lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")


def test_report_numbers_from_a_known_run(tmp_path):
    log = tmp_path / "metrics.jsonl"
    write_run(log)
    s = report(log, tmp_path / "out")
    t = s["totals"]
    assert t["consumed_by_topic"] == {"rubin": 60, "ztf": 650} and t["consumed"] == 710
    assert t["published"] == 594 and t["dead_letters_by_stage"] == {"decode": 6}
    assert t["classified_by_model"] == {"stargal": 594}
    assert s["snapshots"] == 7 and s["duration_s"] == 60 and s["start"] == "1970-01-01T00:16:40Z"
    # Busy from 1010 to 1040 and again (the restart) from 1050 to 1060: the active span is 1010..1060.
    assert s["active_s"] == 50 and s["mean_alerts_per_s"] == 710 / 50
    assert s["peak_alerts_per_s"] == 33.0  # (300 + 30) / 10 s
    ingest = s["latency_s"]["ingest"]
    assert ingest["observations"] == 597
    assert ingest["p50"] == pytest.approx(0.1 + 0.15 * (0.5 * 597) / 594, abs=1e-6)  # linear inside (0.1, 0.25]
    assert ingest["p99"] == pytest.approx(0.1 + 0.15 * (0.99 * 597) / 594, abs=1e-6)
    assert s["latency_s"]["alert"]["p50"] > 86400
    for name in ("throughput.png", "latency.png"):
        assert_png(tmp_path / "out" / name)
    assert s["files"][-1].endswith("summary.json")


def test_report_time_window_and_cli(tmp_path, capsys):
    log = tmp_path / "metrics.jsonl"
    write_run(log)
    s = report(log, tmp_path / "w", start="1019", end="1970-01-01T00:17:20Z")  # 1019..1040
    assert s["totals"]["consumed"] == 330 + 220 and s["snapshots"] == 3
    capsys.readouterr()

    assert main(["report", "--metrics-log", str(log), "--out", str(tmp_path / "cli")]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["consumed"] == 710


def test_report_user_errors_are_one_line(tmp_path, capsys):
    assert main(["report", "--metrics-log", str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"stampflow: metrics log not found: {tmp_path / 'missing.jsonl'}"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(snapshot_line(Metrics().registry) + "\n{not json\n")
    with pytest.raises(StampflowError, match=r"bad.jsonl line 2 is not a stampflow metrics snapshot"):
        load_metrics_log(bad)

    one = tmp_path / "one.jsonl"
    one.write_text(snapshot_line(Metrics().registry) + "\n")
    assert main(["report", "--metrics-log", str(one), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need at least two snapshots" in err[0]

    with pytest.raises(StampflowError, match="--start 'yesterday': not unix seconds or ISO 8601"):
        parse_time("yesterday", "--start")
    assert parse_time("2026-11-22T02:30:00", "--end") == parse_time("2026-11-22T02:30:00Z", "--end")


def test_report_from_unreachable_prometheus_is_one_line(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["report", "--prometheus", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"stampflow: cannot reach http://127.0.0.1:{port}/api/v1/query_range")
