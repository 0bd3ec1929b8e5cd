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


def test_a_failed_delivery_is_one_line_naming_each_distinct_error_once(fixtures_dir):
    """Many results failing the same way (here: the broker never answers) make one short line, not one
    clause per message."""
    items = [m for m in FileSource([fixtures_dir / "alerts"]).iter_messages()]
    sink = KafkaSink({"bootstrap.servers": f"127.0.0.1:{closed_port()}", "enable.idempotence": True, "acks": "all",
                      "delivery.timeout.ms": 1000, "log_level": 0}, "results", "dead", "test", delivery_timeout_s=5)
    engine = Engine(RecordingSource(items), sink, [Registry().load("stargal")], Decoder(), Metrics(), max_batch=16,
                    max_wait_ms=10, max_consecutive_failures=100, code_version="test", config_hash="0" * 16)
    with pytest.raises(PublishError) as err:
        engine.run()
    line = str(err.value)
    assert "\n" not in line and line.startswith("results were not delivered (results: Local: Message timed out (")
    assert line.count("results: Local: Message timed out") == 1 and line.endswith("; offsets were not committed")


def test_next_offsets_are_one_past_the_highest_per_partition():
    msgs = [RawMessage(b"", Origin(topic="t", partition=p, offset=o)) for p, o in
            [(0, 5), (0, 7), (1, 2), (0, 6), (2, 0)]]
    got = [(tp.topic, tp.partition, tp.offset) for tp in KafkaSource.next_offsets(msgs)]
    assert got == [("t", 0, 8), ("t", 1, 3), ("t", 2, 1)]


# -- the Sink protocol carries the delivery guarantee; the engine names no concrete sink or source -------------------
class FakeProducer:
    """Records the transactional calls a KafkaSink makes; every delivery is acknowledged."""

    def __init__(self):
        self.calls: list = []

    def poll(self, timeout):
        return 0

    def flush(self, timeout):
        self.calls.append("flush")
        return 0

    def begin_transaction(self):
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets, group_metadata, timeout):
        self.calls.append(("offsets", [(tp.topic, tp.partition, tp.offset) for tp in offsets], group_metadata))

    def commit_transaction(self, timeout):
        self.calls.append("commit")


class GroupSource(RecordingSource):
    """A source that can join a producer transaction (the `TransactionalSource` capability)."""

    next_offsets = staticmethod(KafkaSource.next_offsets)

    def group_metadata(self):
        return "group-metadata"


def offline_sink(transactional: bool) -> KafkaSink:
    sink = KafkaSink({"bootstrap.servers": f"127.0.0.1:{closed_port()}", "log_level": 0}, "r", "d", "v",
                     delivery_timeout_s=1)
    sink.producer = FakeProducer()
    sink.transactional = transactional
    return sink


def coordinates(n: int) -> list:
    return [RawMessage(b"", Origin(topic="t", partition=i % 2, offset=10 + i)) for i in range(n)]


def test_transactional_sink_commits_offsets_inside_its_transaction():
    sink, batch = offline_sink(transactional=True), coordinates(5)
    source = GroupSource([])
    sink.write_results([])
    sink.commit(source, batch)
    assert sink.producer.calls == ["begin", "flush", ("offsets", [("t", 0, 15), ("t", 1, 14)], "group-metadata"),
                                   "commit"]
    assert source.commits == []  # the consumer never commits on its own in exactly-once mode


def test_at_least_once_sink_commits_through_the_source_after_acknowledgement():
    sink, batch = offline_sink(transactional=False), coordinates(3)
    source = GroupSource([])
    sink.commit(source, batch)
    assert sink.producer.calls == ["flush"] and source.commits == [batch]


def test_transactional_sink_refuses_a_source_that_cannot_join_the_transaction():
    from schemas.errors import StampflowError

    with pytest.raises(StampflowError, match="exactly-once delivery needs"):
        offline_sink(transactional=True).commit(RecordingSource([]), coordinates(1))


class RecordingSink:
    """Any object with the Sink protocol's methods; commit can be told to fail like an unacknowledged publish."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.events: list = []

    def write_results(self, results):
        self.events.append(("results", len(results)))

    def write_dead_letters(self, letters):
        self.events.append(("dead", len(letters)))

    def commit(self, source, batch):
        if self.fail:
            raise PublishError("not acknowledged; offsets were not committed")
        self.events.append(("commit", len(batch)))
        source.commit(batch)

    def close(self):
        self.events.append("close")


def test_engine_delivers_through_the_protocol_and_observes_only_acknowledged_batches(fixtures_dir):
    items = [m for m in FileSource([fixtures_dir / "alerts"]).iter_messages()]
    seen: list = []

    class Observer:
        def on_acknowledged(self, batch, outcome):
            seen.append((len(batch), len(outcome.results), len(outcome.dead_letters)))

    def engine(sink, source):
        e = Engine(source, sink, [], Decoder(), Metrics(), max_batch=64, max_wait_ms=10,
                   max_consecutive_failures=100, code_version="v", config_hash="h")
        e.observers.append(Observer())
        return e

    ok = engine(RecordingSink(), RecordingSource(items))
    stats = ok.run()
    assert ok.sink.events == [("results", 3), ("dead", 1), ("commit", 4), "close"]
    assert ok.source.commits == [items] and seen == [(4, 3, 1)] and stats.results == 3
    assert ok.metrics.registry.get_sample_value("stampflow_results_published_total", {"topic": "file"}) == 3

    seen.clear()
    failing = engine(RecordingSink(fail=True), RecordingSource(items))
    with pytest.raises(PublishError):
        failing.run()
    # Nothing was acknowledged: no observer ran, no result counts as published, no stats moved.
    assert seen == [] and failing.source.commits == [] and failing.stats.results == 0
    assert failing.metrics.registry.get_sample_value("stampflow_results_published_total", {"topic": "file"}) is None
    assert failing.metrics.registry.get_sample_value("stampflow_offset_commits_total") == 0


def test_engine_names_no_concrete_sink_or_source():
    import inspect

    import stream.engine

    source = inspect.getsource(stream.engine)
    for concrete in ("KafkaSink", "KafkaSource", "FileSink", "IterSource", "isinstance(self.sink",
                     "isinstance(self.source"):
        assert concrete not in source, concrete
