"""Helpers for the fault tests: a fixed-rate feeder of real alerts, a broker of the test's own (to kill and
restart), and the accounting every fault test ends with (lost, duplicated, per input offset).

The counts are made from the topics themselves, never from the worker's word: an input offset is *covered* when
a result or a dead letter names it as its source; *lost* is an input offset nobody covered; *duplicated* is
every cover beyond the first.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from confluent_kafka import Consumer, TopicPartition

from tests.integration.conftest import REPO, clean_env, decode_dead_letters, decode_results, end_offsets, read_topic

KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"
# A short session: the group notices a killed member in seconds instead of the default 45 s.
FAST_GROUP = '{"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}'


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, fails the test with ``what`` on timeout."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - t0


class Feeder:
    """`stampflow replay` of real alert files at a fixed rate, in the background, so a fault lands mid-stream."""

    def __init__(self, bootstrap: str, topic: str, paths: list[Path], *, rate: float, repeat: int = 1,
                 common: dict | None = None):
        env = clean_env(STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS=bootstrap)
        if common:
            env["STAMPFLOW_KAFKA__COMMON"] = json.dumps(common)
        self.proc = subprocess.Popen([sys.executable, "-m", "stream", "replay", *map(str, paths), "--topic", topic,
                                      "--rate", str(rate), "--repeat", str(repeat), "--quiet"], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish(self, timeout: float = 300) -> int:
        """Wait for the feed to be acknowledged by the broker; returns the number of messages sent."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err.decode()[-2000:]
        return json.loads(out.decode().strip().splitlines()[-1])["messages"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


@dataclass
class Tally:
    """What the topics say about every input offset."""
    inputs: int
    results: int
    dead_letters: int
    lost: list[tuple[int, int]] = field(default_factory=list)
    duplicated: int = 0
    records: list[dict] = field(default_factory=list, repr=False)  # the decoded results
    dead_records: list[dict] = field(default_factory=list, repr=False)  # the decoded dead letters

    def line(self) -> str:
        return (f"inputs={self.inputs} results={self.results} dead_letters={self.dead_letters} "
                f"lost={len(self.lost)} duplicated={self.duplicated}")


def tally(bootstrap: str, topics: dict, partitions: int = 3, timeout: float = 120, common: dict | None = None) -> Tally:
    """Read the result and dead-letter topics (read_committed) and cover every input offset with them. Call it
    once the worker has caught up (lag 0), so a missing result is a loss and not a result still to come."""
    ends = end_offsets(bootstrap, topics["input"], partitions, common=common)
    n = sum(ends.values())
    dead = read_dead_letters(bootstrap, topics, common)
    results = decode_results(read_topic(bootstrap, topics["results"], expect=n - len(dead), timeout=timeout, idle=2,
                                        common=common))
    covers = Counter((r["source"]["partition"], r["source"]["offset"]) for r in results)
    covers.update((d["source"]["partition"], d["source"]["offset"]) for d in dead)
    lost = [(p, o) for p, end in ends.items() for o in range(end) if (p, o) not in covers]
    return Tally(n, len(results), len(dead), lost, sum(c - 1 for c in covers.values()), results, dead)


def read_dead_letters(bootstrap: str, topics: dict, common: dict | None = None) -> list[dict]:
    """The dead letters, without sitting out a read timeout when the topic is empty (the usual case)."""
    if sum(end_offsets(bootstrap, topics["dead"], 1, common=common).values()) == 0:
        return []
    return decode_dead_letters(read_topic(bootstrap, topics["dead"], timeout=30, idle=2, common=common))


def covered_below(bootstrap: str, topics: dict, committed: dict[int, int]) -> list[tuple[int, int]]:
    """Input offsets below the committed position that have no result or dead letter (must be none)."""
    results = decode_results(read_topic(bootstrap, topics["results"], timeout=20, idle=2))
    dead = read_dead_letters(bootstrap, topics)
    done = {(r["source"]["partition"], r["source"]["offset"]) for r in results}
    done |= {(d["source"]["partition"], d["source"]["offset"]) for d in dead}
    return [(p, o) for p, end in committed.items() for o in range(end) if (p, o) not in done]


def report(name: str, **numbers) -> None:
    """One greppable line per fault (pytest -s, or -rP): the numbers docs/reliability.md quotes."""
    print(f"FAULT {name}: " + " ".join(f"{k}={v}" for k, v in numbers.items()), flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def group_lag(bootstrap: str, group: str, topic: str, partitions: int = 3) -> dict[int, int]:
    """End offset minus the group's committed offset, per partition (what an operator's lag panel shows)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        return {tp.partition: ends[tp.partition] - max(tp.offset, 0) for tp in got}
    finally:
        c.close()


class OwnBroker:
    """A broker of the test's own in ``run_dir`` (deploy/kafka/kafka.sh), for faults that take the broker down:
    the session broker others share is never killed."""

    def __init__(self, run_dir: Path, env: dict | None = None):
        self.run_dir = run_dir
        self.env = env
        self.bootstrap = self._kafka("start")

    def _kafka(self, cmd: str) -> str:
        proc = subprocess.run(["bash", str(KAFKA_SH), cmd, str(self.run_dir)], capture_output=True, text=True,
                              env=self.env, timeout=180)
        if proc.returncode != 0:
            raise AssertionError(f"kafka.sh {cmd} failed: {proc.stderr[-2000:]}")
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""

    def pid(self) -> int:
        return int((self.run_dir / "pid").read_text())

    def kill9(self) -> None:
        pid = self.pid()
        subprocess.run(["kill", "-9", str(pid)], check=True)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, "the killed broker to go")

    def restart(self) -> str:
        return self._kafka("restart")

    def stop(self) -> None:
        self._kafka("stop")


def set_quota(bootstrap: str, client_id: str, producer_byte_rate: int | None) -> None:
    """A broker client quota on ``client_id`` (kafka-configs); None removes it."""
    change = (["--add-config", f"producer_byte_rate={producer_byte_rate}"] if producer_byte_rate is not None
              else ["--delete-config", "producer_byte_rate"])
    proc = subprocess.run(["bash", str(KAFKA_SH), "configs", "--bootstrap-server", bootstrap, "--alter",
                           "--entity-type", "clients", "--entity-name", client_id, *change],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]


def longest_pause_s(bootstrap: str, topic: str, common: dict | None = None) -> float:
    """The longest gap between consecutive results (producer timestamps): how long readers saw nothing new."""
    stamps = sorted(m.timestamp()[1] for m in read_topic(bootstrap, topic, timeout=30, idle=2, common=common))
    return max((b - a for a, b in zip(stamps, stamps[1:])), default=0) / 1000


def main(argv: list[str]) -> int:
    """Tally every alerts-/results-/dead- topic triple on a broker, after a test run against it:
    ``python -m tests.integration.faults BOOTSTRAP``. This is how docs/reliability.md measured the tests in
    test_serve_kafka.py (kill -9, exactly-once, SIGTERM), which assert their bounds but print no numbers."""
    from confluent_kafka.admin import AdminClient

    bootstrap = argv[0]
    names = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    for name in sorted(names):
        if not name.startswith("alerts-"):
            continue
        tag = name[len("alerts-"):]
        topics = {"input": name, "results": f"results-{tag}", "dead": f"dead-{tag}"}
        if topics["results"] not in names:
            continue
        t = tally(bootstrap, topics, timeout=30)
        print(f"{tag}: {t.line()} longest_pause_s={longest_pause_s(bootstrap, topics['results']):.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
