"""Sources behind one interface, so the engine cannot tell Kafka from files.

``poll(max_messages, timeout_s)`` returns what is ready (raw messages, or dead letters for input that could not
even be read); ``commit(messages)`` records progress once their results are acknowledged; ``exhausted`` turns
true when a finite source (files) has nothing left.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Protocol, runtime_checkable

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from schemas.errors import StampflowError
from schemas.packet import DeadLetter, Framing, Origin, RawMessage

log = logging.getLogger(__name__)

Item = RawMessage | DeadLetter


class Source(Protocol):
    exhausted: bool

    def poll(self, max_messages: int, timeout_s: float) -> list[Item]: ...
    def owned(self, item: Item) -> bool: ...
    def commit(self, items: list[Item]) -> None: ...
    def lag(self) -> dict[tuple[str, int], int]: ...
    def assigned(self) -> bool: ...
    def close(self) -> None: ...


@runtime_checkable
class TransactionalSource(Protocol):
    """A source whose progress can be committed inside a Kafka producer transaction (exactly-once): the
    transactional sink asks for this capability, so neither it nor the engine names a concrete source."""

    def next_offsets(self, items: list[Item]) -> list[TopicPartition]: ...
    def group_metadata(self) -> Any: ...


class IterSource:
    """Wraps any iterator of messages (the file source, a replay, a test list). Commits are no-ops: a file run
    is re-run from the start, and its results file is only complete when the run ends cleanly."""

    def __init__(self, items: Iterator[Item], label: str = "file"):
        self._it = iter(items)
        self.exhausted = False
        self.label = label

    def poll(self, max_messages: int, timeout_s: float) -> list[Item]:
        out: list[Item] = []
        for item in self._it:
            out.append(item)
            if len(out) >= max_messages:
                return out
        self.exhausted = True
        return out

    def owned(self, item: Item) -> bool:
        return True

    def commit(self, items: list[Item]) -> None:
        return None

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def assigned(self) -> bool:
        return True

    def close(self) -> None:
        return None


class KafkaSource:
    """A confluent-kafka consumer with auto-commit off; offsets are committed explicitly by the engine."""

    def __init__(self, consumer_config: dict[str, Any], topics: list[str], framing: Framing = Framing.AUTO,
                 start_timestamp_ms: int | None = None):
        self.exhausted = False
        self.topics = topics
        self.framing = framing
        self.start_timestamp_ms = start_timestamp_ms
        self._seeked: set[tuple[str, int]] = set()
        self.assignment: set[tuple[str, int]] = set()
        self._fatal: str | None = None
        conf = dict(consumer_config)
        conf.setdefault("error_cb", self._on_error)
        conf.setdefault("logger", logging.getLogger("librdkafka.consumer"))
        # The Python client cannot report the negotiated protocol; the strategy we configure decides it.
        self._is_cooperative = "cooperative" in str(conf.get("partition.assignment.strategy", ""))
        try:
            self.consumer = Consumer(conf)
        except KafkaException as exc:
            raise StampflowError(f"invalid Kafka consumer configuration: {exc.args[0].str()}") from None
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)

    # -- rebalance -----------------------------------------------------------------------------------------------
    def _cooperative(self) -> bool:
        return self._is_cooperative

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.start_timestamp_ms is not None:
            # Only partitions the group has never committed start from the timestamp: a restarted worker
            # resumes from its commits, so leaving the setting in place cannot replay a night twice.
            fresh = [p for p in partitions if (p.topic, p.partition) not in self._seeked]
            if fresh:
                for c in consumer.committed([TopicPartition(p.topic, p.partition) for p in fresh], timeout=10):
                    if c.offset >= 0:
                        self._seeked.add((c.topic, c.partition))
            todo = [TopicPartition(p.topic, p.partition, self.start_timestamp_ms) for p in partitions
                    if (p.topic, p.partition) not in self._seeked]
            if todo:
                found = consumer.offsets_for_times(todo, timeout=10)
                by_key = {(p.topic, p.partition): p for p in found}
                for p in partitions:
                    hit = by_key.get((p.topic, p.partition))
                    if hit is not None:
                        # No message at or after the time: offset -1 means "end of partition".
                        p.offset = hit.offset if hit.offset >= 0 else -1
                        self._seeked.add((p.topic, p.partition))
                        log.info("partition %s[%d] starts at offset %d (timestamp %d)", p.topic, p.partition,
                                 p.offset, self.start_timestamp_ms)
        if self._cooperative():
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self.assignment |= {(p.topic, p.partition) for p in partitions}
        log.info("assigned %s", sorted(self.assignment))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment -= {(p.topic, p.partition) for p in partitions}
        if self._cooperative():
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        log.info("revoked %s", sorted((p.topic, p.partition) for p in partitions))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            log.error("kafka consumer: all brokers are down (%s)", err.str())
        else:
            log.warning("kafka consumer: %s", err.str())

    # -- data ----------------------------------------------------------------------------------------------------
    def poll(self, max_messages: int, timeout_s: float) -> list[Item]:
        if self._fatal:
            raise StampflowError(f"fatal Kafka consumer error: {self._fatal}")
        msgs = self.consumer.consume(num_messages=max_messages, timeout=timeout_s)
        now = time.time()
        out: list[Item] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal() or err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise StampflowError(f"fatal Kafka consumer error: {err.str()}")
                log.warning("kafka consumer: %s", err.str())
                continue
            origin = Origin(topic=m.topic(), partition=m.partition(), offset=m.offset())
            value = m.value()
            if value is None:  # a tombstone is not an alert, but it still advances the offset
                out.append(DeadLetter(b"", origin, "read", "empty message (null value)", "EmptyMessage"))
                continue
            out.append(RawMessage(value=value, origin=origin, ingest_time=now, framing=self.framing, key=m.key()))
        return out

    def owned(self, item: Item) -> bool:
        """False for messages of partitions revoked while the batch was filling: the new owner will redo them."""
        o = item.origin
        return (o.topic, o.partition) in self.assignment

    @staticmethod
    def next_offsets(items: list[Item]) -> list[TopicPartition]:
        """The offsets to commit for ``items``: one past the highest offset per partition (Kafka's convention)."""
        top: dict[tuple[str, int], int] = {}
        for it in items:
            o = it.origin
            if o.topic is None:
                continue
            key = (o.topic, o.partition)
            top[key] = max(top.get(key, -1), o.offset)
        return [TopicPartition(t, p, off + 1) for (t, p), off in sorted(top.items())]

    def commit(self, items: list[Item]) -> None:
        offsets = [tp for tp in self.next_offsets(items) if (tp.topic, tp.partition) in self.assignment]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in (KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
                              KafkaError.REBALANCE_IN_PROGRESS, KafkaError._NO_OFFSET):
                # Ownership moved while committing; the new owner re-reads from the last committed offset,
                # so these results may appear twice but none is lost.
                log.warning("offset commit skipped during rebalance: %s", err.str())
                return
            raise StampflowError(f"offset commit failed: {err.str()}") from None

    def group_metadata(self) -> Any:
        return self.consumer.consumer_group_metadata()

    def assigned(self) -> bool:
        """Whether the group coordinator has given us at least one partition (readiness)."""
        return bool(self.assignment)

    def lag(self) -> dict[tuple[str, int], int]:
        """High watermark minus our position, per assigned partition."""
        parts = [TopicPartition(t, p) for t, p in sorted(self.assignment)]
        if not parts:
            return {}
        out: dict[tuple[str, int], int] = {}
        positions = self.consumer.position(parts)
        committed = None
        for tp in positions:
            try:
                # The high watermark arrives with every fetch response; asking the broker per partition
                # would stall the poll loop on a slow broker.
                low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    low, high = self.consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
            except KafkaException:
                continue
            pos = tp.offset
            if pos == OFFSET_INVALID or pos < 0:
                if committed is None:
                    committed = {(c.topic, c.partition): c.offset for c in self.consumer.committed(parts, timeout=5)}
                pos = committed.get((tp.topic, tp.partition), OFFSET_INVALID)
                if pos < 0:
                    pos = low
            out[(tp.topic, tp.partition)] = max(0, high - pos)
        return out

    def close(self) -> None:
        self.consumer.close()
