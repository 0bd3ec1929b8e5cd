"""`stampflow serve` worker processes for the benchmarks: N of them in one consumer group, watched through their
own `/metrics`.

One worker is what a single Python process does; N workers (one per core) in one group is how the worker scales
on a machine: Kafka gives each a share of the partitions, and each keeps every guarantee on its own (commit only
after acknowledgement). Used by `run_pipeline_bench.py` (backlog drain) and `visit_bench.py` (Rubin visits).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start_broker(run_dir: Path) -> str:
    """A real broker for a bench run (deploy/kafka/kafka.sh); returns its bootstrap address."""
    out = subprocess.run(["bash", str(REPO / "deploy/kafka/kafka.sh"), "start", str(run_dir)], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def stop_broker(run_dir: Path) -> None:
    subprocess.run(["bash", str(REPO / "deploy/kafka/kafka.sh"), "stop", str(run_dir)], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: How often the harness reads the workers' /metrics while they drain. Every read renders the whole registry in
#: the worker's process (a thread of its HTTP server, holding the GIL): reading three counters every 50 ms cost
#: the worker measurable CPU. A Prometheus server reads every 15 s; 4 reads a second put the end of a run within
#: 0.25 s (under 1% of a 50,000-alert drain).
POLL_S = 0.25
COUNTERS = ("stampflow_messages_consumed_total", "stampflow_results_published_total", "stampflow_dead_letters_total")


def scrape(port: int) -> dict[str, float]:
    """The harness's counters from one read of a worker's /metrics (each summed over its labels)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


def metric(port: int, name: str) -> float:
    return scrape(port)[name]


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200
    except (OSError, urllib.error.HTTPError):
        return False


class Workers:
    """N `python -m stream serve` processes in the consumer group ``group``; stopped with SIGTERM (each
    finishes its batch in flight, flushes and commits) on `stop` or leaving the ``with`` block."""

    def __init__(self, bootstrap: str, topic: str, results: str, *, group: str, n: int = 1, batch: int = 256,
                 model: str = "stargal", extra_env: dict[str, str] | None = None):
        self.ports = [free_port() for _ in range(n)]
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        base = {k: v for k, v in os.environ.items() if not k.startswith("STAMPFLOW_") or k == "STAMPFLOW_DATA"}
        base.update({"STAMPFLOW_MODELS__NAMES": json.dumps([model]), "STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                     "STAMPFLOW_KAFKA__GROUP_ID": group, "STAMPFLOW_KAFKA__INPUT_TOPICS": json.dumps([topic]),
                     "STAMPFLOW_KAFKA__RESULT_TOPIC": results, "STAMPFLOW_KAFKA__DEAD_LETTER_TOPIC": f"{results}-dead",
                     "STAMPFLOW_BATCH__MAX_SIZE": str(batch), "STAMPFLOW_LOG_LEVEL": "WARNING", **(extra_env or {})})
        for i, port in enumerate(self.ports):
            env = dict(base, STAMPFLOW_METRICS__PORT=str(port))
            log = open(Path(tempfile.gettempdir()) / f"bench-worker-{topic}-{i}.log", "wb")
            self.logs.append(log)
            self.procs.append(subprocess.Popen([sys.executable, "-m", "stream", "serve"], env=env, cwd=REPO,
                                               stdout=log, stderr=subprocess.STDOUT))

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_up(self, timeout: float = 180, assigned: bool = False) -> None:
        """Until every worker serves /metrics (and, with ``assigned``, is ready: models loaded, partitions held)."""
        deadline = time.time() + timeout
        for port, proc in zip(self.ports, self.procs):
            while True:
                try:
                    metric(port, "stampflow_messages_consumed_total")
                    if not assigned or ready(port):
                        break
                except OSError:
                    pass
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"worker on port {port} did not start (see {self.logs[0].name})")
                time.sleep(0.2)

    def counters(self) -> dict[str, float]:
        """The harness's counters summed over the workers (one /metrics read each)."""
        out = dict.fromkeys(COUNTERS, 0.0)
        for port in self.ports:
            for k, v in scrape(port).items():
                out[k] += v
        return out

    def total(self, name: str) -> float:
        return self.counters()[name]

    def done(self) -> float:
        c = self.counters()
        return c["stampflow_results_published_total"] + c["stampflow_dead_letters_total"]

    def drain(self, expect: int, timeout: float) -> dict:
        """Wait until ``expect`` results or dead letters are published; seconds from the first consume."""
        first = None
        done = 0.0
        deadline = time.time() + timeout
        while time.time() < deadline:
            c = self.counters()
            if first is None and c["stampflow_messages_consumed_total"] > 0:
                first = time.monotonic()
            done = c["stampflow_results_published_total"] + c["stampflow_dead_letters_total"]
            if done >= expect:
                break
            time.sleep(POLL_S)
        end = time.monotonic()
        return {"seconds": end - (first or end), "done": done, "peak_rss_bytes": max(self.rss())}

    def rss(self) -> list[int]:
        out = []
        for proc in self.procs:
            rss = 0
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    rss = int(line.split()[1]) * 1024
            out.append(rss)
        return out

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
