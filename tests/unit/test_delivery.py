"""At-least-once at the seam: results the broker never acknowledged must never have their offsets committed.

Uses a real librdkafka producer pointed at a closed loopback port, so delivery genuinely fails."""
from __future__ import annotations

import socket

import pytest

from models.registry import Registry
from stream.decode import Decoder
from stream.engine import Engine
from stream.file_source import FileSource
from stream.metrics import Metrics
from schemas.packet import Origin, RawMessage
from stream.sinks import KafkaSink, PublishError
from stream.sources import IterSource, KafkaSource


class RecordingSource(IterSource):
    def __init__(self, items):
        super().__init__(iter(items))
        self.commits: list = []

    def commit(self, items):
        self.commits.append(list(items))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unacknowledged_results_are_never_committed(fixtures_dir):
    items = [m for m in FileSource([fixtures_dir / "alerts"]).iter_messages()]
    source = RecordingSource(items)
    sink = KafkaSink({"bootstrap.servers": f"127.0.0.1:{closed_port()}", "enable.idempotence": True, "acks": "all",
                      "delivery.timeout.ms": 1500, "log_level": 0}, "results", "dead", "test", delivery_timeout_s=3)
    engine = Engine(source, sink, [Registry().load("stargal")], Decoder(), Metrics(), max_batch=16, max_wait_ms=10,
                    max_consecutive_failures=100, code_version="test", config_hash="0" * 16)
    with pytest.raises(PublishError, match="offsets were not committed"):
        engine.run()
    assert source.commits == []
    assert PublishError.exit_code == 1


def test_next_offsets_are_one_past_the_highest_per_partition():
    msgs = [RawMessage(b"", Origin(topic="t", partition=p, offset=o)) for p, o in
            [(0, 5), (0, 7), (1, 2), (0, 6), (2, 0)]]
    got = [(tp.topic, tp.partition, tp.offset) for tp in KafkaSource.next_offsets(msgs)]
    assert got == [("t", 0, 8), ("t", 1, 3), ("t", 2, 1)]
