"""A real Prometheus scraping a real worker fed through the real broker: the stored series, our recording rules
evaluated on them, the worker's probes and metrics log, and `stampflow top`/`report` reading it all back."""
from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from stream.cli import build_parser
from stream.report import run_report
from stream.top import run_top
from tests.integration.conftest import REPO, free_port, read_topic

pytestmark = pytest.mark.integration

ALERTS = REPO / "tests" / "fixtures" / "alerts"
GOOD = ["ZTF19acyjzeo.avro", "ZTF19acxxwrs.avro", "522193343315015001.avro"]
LEGACY = "121540793515135000.avro"  # ZTF schema 1.3 (JPEG stamps): dead-lettered at decode
REPEAT = 12  # 36 good alerts + 2 dead letters


def http(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(what: str, check, timeout: float, on_fail=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{on_fail()}")


class Prometheus:
    """A real `prometheus` on loopback with its own storage, scraping one worker every second, with our rules."""

    def __init__(self, tmp: Path, worker_port: int):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not on PATH: run `bash deploy/prometheus/install.sh`")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML; no quoting surprises in paths
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(REPO / "deploy" / "prometheus" / "rules" / "*.yml")],
            "scrape_configs": [{"job_name": "stampflow",
                                "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}],
        }))
        self.log_path = tmp / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_ready(self, timeout: float = 30) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.log()}")
            return http(f"{self.base}/-/ready", 2)[0] == 200
        wait_for("prometheus to be ready", ready, timeout, self.log)

    def query(self, expr: str) -> list[tuple[dict, float]]:
        status, body = http(f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        payload = json.loads(body)
        assert status == 200 and payload["status"] == "success", payload
        return [(r["metric"], float(r["value"][1])) for r in payload["data"]["result"]]

    def scalar(self, expr: str) -> float | None:
        rows = self.query(expr)
        return rows[0][1] if rows else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def produce(bootstrap: str, topic: str) -> tuple[int, int]:
    good = [(ALERTS / name).read_bytes() for name in GOOD] * REPEAT
    bad = [(ALERTS / LEGACY).read_bytes()] * 2
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    failures: list[str] = []
    for value in good + bad:
        p.produce(topic, value=value, on_delivery=lambda err, msg: err and failures.append(err.str()))
    assert p.flush(30) == 0 and not failures, failures
    return len(good), len(bad)


def cli_args(*argv: str):
    return build_parser().parse_args(list(argv))


def test_prometheus_stores_what_the_worker_did(kafka_bootstrap, topics, start_worker, tmp_path, capsys):
    t0 = time.time()
    metrics_log = tmp_path / "metrics.jsonl"
    worker = start_worker(STAMPFLOW_BATCH__MAX_SIZE="8", STAMPFLOW_BATCH__MAX_WAIT_MS="50",
                          STAMPFLOW_METRICS__LOG_FILE=str(metrics_log), STAMPFLOW_METRICS__LOG_INTERVAL_S="0.5")
    prom = Prometheus(tmp_path, worker.port)
    try:
        w = f"http://127.0.0.1:{worker.port}"
        # Liveness answers as soon as the HTTP server is up, readiness once models are loaded and partitions
        # assigned.
        wait_for("/livez", lambda: http(f"{w}/livez", 2)[0] == 200, 60, worker.log)
        wait_for("/readyz", lambda: http(f"{w}/readyz", 2)[0] == 200, 60, worker.log)
        health = json.loads(http(f"{w}/healthz")[1])
        assert health["live"] and health["ready"] and health["models_loaded"] and health["assigned"]
        prom.wait_ready()
        wait_for("the first scrape", lambda: prom.scalar('up{job="stampflow"}') == 1, 20, prom.log)
        start = time.time()

        n_good, n_bad = produce(kafka_bootstrap, topics["input"])
        n = n_good + n_bad
        assert len(read_topic(kafka_bootstrap, topics["results"], expect=n_good, timeout=60)) == n_good

        consumed = 'sum(stampflow_messages_consumed_total{job="stampflow"})'
        wait_for(f"Prometheus to store {n} consumed", lambda: prom.scalar(consumed) == n, 20,
                 lambda: f"{prom.query(consumed)}\n{worker.log()}")
        t = topics["input"]
        assert prom.scalar(f'sum(stampflow_results_published_total{{topic="{t}"}})') == n_good
        assert prom.scalar(f'sum(stampflow_dead_letters_total{{topic="{t}", stage="decode"}})') == n_bad
        assert prom.scalar('sum(stampflow_packets_classified_total{model="stargal"})') == n_good
        assert prom.scalar('sum(stampflow_end_to_end_latency_seconds_count{reference="ingest"})') == n_good
        assert prom.scalar("stampflow_ready") == 1
        # A rate over the stored samples, and our recording rules evaluated on the real series.
        assert prom.scalar(f'sum(rate(stampflow_messages_consumed_total{{topic="{t}"}}[30s]))') > 0
        wait_for("the recording rules", lambda: (prom.scalar(
            f'topic:stampflow_messages_consumed:rate1m{{job="stampflow", topic="{t}"}}') or 0) > 0, 15, prom.log)
        p99 = 'reference:stampflow_end_to_end_latency_seconds:p99_rate1m{reference="ingest"}'
        # The rule's value is NaN (no observation in its window: 0/0) until an evaluation runs after the scrape
        # that stored the observations; the rules and the scrapes keep separate clocks, so wait for a number.
        wait_for("the latency recording rule", lambda: math.isfinite(prom.scalar(p99) or math.nan), 15, prom.log)
        assert 0 < prom.scalar(p99) < 60
        wait_for("lag to reach zero", lambda: prom.scalar(
            f'topic:stampflow_consumer_lag:sum{{topic="{t}"}}') == 0, 15, worker.log)

        # `stampflow top` and `stampflow report` against this Prometheus.
        capsys.readouterr()
        assert run_top(cli_args("top", "--prometheus", prom.base, "--once")) == 0
        frame = capsys.readouterr().out
        assert t in frame and "workers up: 1/1" in frame and "ready: 1/1" in frame and "stargal" in frame
        out = tmp_path / "report-prom"
        assert run_report(cli_args("report", "--prometheus", prom.base, "--start", f"{start - 2:.3f}",
                                   "--end", f"{time.time():.3f}", "--step", "1", "--out", str(out))) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["totals"]["consumed"] == n and summary["totals"]["published"] == n_good
        assert summary["peak_alerts_per_s"] > 0 and summary["latency_s"]["ingest"]["observations"] == n_good
        assert (out / "throughput.png").stat().st_size > 1000 and (out / "latency.png").stat().st_size > 1000

        # SIGTERM: a clean exit, and the metrics log's last line has the final counts.
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.log()
        wait_for("the scrape to fail once the worker is gone", lambda: prom.scalar('up{job="stampflow"}') == 0, 10)
    finally:
        prom.stop()
        worker.kill()

    last = json.loads(metrics_log.read_text().splitlines()[-1])
    assert sum(v for name, labels, v in last["samples"] if name == "stampflow_messages_consumed_total") == n
    capsys.readouterr()
    out = tmp_path / "report-log"
    assert run_report(cli_args("report", "--metrics-log", str(metrics_log), "--out", str(out))) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["consumed"] == n and summary["totals"]["dead_letters_by_stage"] == {"decode": n_bad}
    assert time.time() - t0 < 90
