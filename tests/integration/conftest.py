"""Integration fixtures: a real Kafka broker (started by `make test`, or here if run directly) and a worker
process started with `stampflow serve`. Nothing here is mocked."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.results import decode_schemaless

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    bootstrap = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if bootstrap:
        yield bootstrap
        return
    run_dir = tmp_path_factory.mktemp("kafka-run")
    script = REPO / "deploy" / "kafka" / "kafka.sh"
    proc = subprocess.run(["bash", str(script), "start", str(run_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"could not start the real Kafka broker: {proc.stderr[-2000:]}")
    try:
        yield (run_dir / "bootstrap").read_text().strip()
    finally:
        subprocess.run(["bash", str(script), "stop", str(run_dir)], capture_output=True)


def create_topics(bootstrap: str, common: dict | None = None) -> dict:
    """Fresh input/results/dead-letter topics on ``bootstrap`` (input has 3 partitions); their names."""
    tag = uuid.uuid4().hex[:8]
    names = {"input": f"alerts-{tag}", "results": f"results-{tag}", "dead": f"dead-{tag}"}
    admin = AdminClient({"bootstrap.servers": bootstrap, **(common or {})})
    futures = admin.create_topics([NewTopic(names["input"], 3, 1), NewTopic(names["results"], 3, 1),
                                   NewTopic(names["dead"], 1, 1)])
    for f in futures.values():
        f.result(30)
    return names


@pytest.fixture
def topics(kafka_bootstrap):
    """Fresh input/results/dead-letter topic names per test (input has 3 partitions)."""
    return create_topics(kafka_bootstrap)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**settings: str) -> dict:
    """This process's environment without any STAMPFLOW_ setting but the data root, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAMPFLOW_") or k == "STAMPFLOW_DATA"}
    env.update(settings)
    return env


def worker_env(bootstrap: str, topics: dict, tmp_path: Path, **extra: str) -> dict:
    env = clean_env()
    env.update({
        "STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "STAMPFLOW_KAFKA__GROUP_ID": f"it-{topics['input']}",
        "STAMPFLOW_KAFKA__INPUT_TOPICS": f'["{topics["input"]}"]',
        "STAMPFLOW_KAFKA__RESULT_TOPIC": topics["results"],
        "STAMPFLOW_KAFKA__DEAD_LETTER_TOPIC": topics["dead"],
        "STAMPFLOW_KAFKA__LAG_INTERVAL_S": "1",
        "STAMPFLOW_METRICS__PORT": str(extra.pop("port", free_port())),
        "STAMPFLOW_LOG_LEVEL": "INFO",
    })
    env.update(extra)
    return env


class Worker:
    def __init__(self, env: dict, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.port = int(env["STAMPFLOW_METRICS__PORT"])
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "stream", "serve"], env=env, cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()

    def wait_metrics(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early ({self.proc.returncode}):\n{self.log()}")
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"worker metrics never came up:\n{self.log()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


@pytest.fixture
def start_worker(kafka_bootstrap, topics, tmp_path):
    started: list[Worker] = []

    def start(**extra: str) -> Worker:
        w = Worker(worker_env(kafka_bootstrap, topics, tmp_path, **extra), tmp_path / f"worker{len(started)}.log")
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait(10)


def read_topic(bootstrap: str, topic: str, *, expect: int | None = None, timeout: float = 120,
               idle: float = 3.0, committed_only: bool = True, common: dict | None = None) -> list:
    """All messages of a topic from the beginning; waits for ``expect`` messages (or until idle).
    ``common``: extra client settings (a secured cluster's SASL/TLS)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed" if committed_only else "read_uncommitted", **(common or {})})
    c.subscribe([topic])
    out = []
    deadline = time.time() + timeout
    last = time.time()
    try:
        while time.time() < deadline:
            msgs = c.consume(500, 0.5)
            for m in msgs:
                if m.error() is None:
                    out.append(m)
            if msgs:
                last = time.time()
            if expect is not None and len(out) >= expect and time.time() - last > 1.0:
                break
            if expect is None and out and time.time() - last > idle:
                break
    finally:
        c.close()
    return out


def decode_results(msgs) -> list[dict]:
    return [decode_schemaless(m.value()) for m in msgs]


def decode_dead_letters(msgs) -> list[dict]:
    return [decode_schemaless(m.value(), "dead_letter") for m in msgs]


def end_offsets(bootstrap: str, topic: str, partitions: int = 3, common: dict | None = None) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", **(common or {})})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int = 3) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        # An empty partition has nothing to commit (-1001, "invalid"); its end offset is 0.
        return {tp.partition: max(tp.offset, 0) for tp in got}
    finally:
        c.close()


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
