"""Replay archival data into Kafka.

Alert files: every format the file source reads, byte-faithful. Messages are produced exactly as the file
source yields them, including files that cannot be parsed (their original bytes), so a replay of a night
reproduces its bad packets too and they land in the dead-letter topic.

Archival cutout sets (Griese, FR-DEEP, MiraBest, DeepMerge, CANDELS/CLASH, SDSS): the caller passes an iterator
of encoded cutout packets (schemas/cutout_packet), keyed by their id; `replay_messages` produces them the same way.

Pacing: as fast as the broker takes them (default), a steady ``rate`` per second, or a visit cadence
(`VisitCadence`: ``--visit-size N --visit-interval S``): N alerts as one burst, as fast as the producer takes them,
every S seconds, the way Rubin's alert-stream simulator sends a visit. Each visit is read from its files before
its slot (memory: one visit), so reading never stretches a burst. Bursts are scheduled from the first one's start
(visit k starts at k*S), so a slow burst does not shift the ones after it; a burst that could not start on time
(the one before, or reading this one, took longer than S) is counted in ``late_visits``. The stats list each
visit's start (unix time of its first message, which is also that message's Kafka timestamp, so latency can be
measured from it), its message count and ``queued_s``, the seconds its messages took to enter the producer.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from confluent_kafka import KafkaError, KafkaException, Producer

from schemas.errors import StampflowError
from schemas.packet import DeadLetter
from stream.broker import check_broker
from stream.config import Settings
from stream.file_source import FileSource


@dataclass(frozen=True)
class VisitCadence:
    """``size`` messages as one burst every ``interval_s`` seconds (Rubin: 10,000 on average, 40,000 at peak,
    a visit about every 34 s)."""

    size: int
    interval_s: float

    def __post_init__(self) -> None:
        if self.size < 1:
            raise StampflowError(f"--visit-size must be at least 1, got {self.size}")
        if not self.interval_s > 0:
            raise StampflowError(f"--visit-interval must be positive seconds, got {self.interval_s}")

    @classmethod
    def of(cls, size: int | None, interval_s: float | None, rate: float | None = None) -> "VisitCadence | None":
        """The cadence from the two command-line values (both or neither; not with --rate)."""
        if size is None and interval_s is None:
            return None
        if size is None or interval_s is None:
            raise StampflowError("--visit-size and --visit-interval go together (N alerts as one burst every S s)")
        if rate is not None:
            raise StampflowError("--visit-size/--visit-interval and --rate are two different pacings; pick one")
        return cls(int(size), float(interval_s))


def _produce(producer: Producer, topic: str, value: bytes, on_delivery, key: bytes | None = None) -> bool:
    """Queue one message, waiting while the local queue is full; False if it is too large to ever send."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return True
        except BufferError:
            producer.poll(0.05)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                return False
            raise StampflowError(f"replay to {topic}: {exc.args[0].str()}") from None


def replay(settings: Settings, paths: list[Path], topic: str, rate: float | None = None, repeat: int = 1,
           progress: bool = True, visit: VisitCadence | None = None) -> dict[str, Any]:
    """Alert files (every FileSource format) into ``topic``, optionally in visit bursts (`VisitCadence`)."""
    if repeat < 1:
        raise StampflowError("--repeat must be at least 1")
    source = FileSource(paths)
    unreadable = 0

    def messages() -> Iterator[tuple[bytes | None, bytes, str]]:
        nonlocal unreadable
        for _ in range(repeat):
            for item in source.iter_messages():
                if isinstance(item, DeadLetter):
                    unreadable += 1
                yield None, item.value, item.origin.describe()

    stats = replay_messages(settings, messages(), topic, total=source.count() * repeat, rate=rate, progress=progress,
                            visit=visit)
    stats["unreadable_files_sent_raw"] = unreadable
    return stats


def replay_messages(settings: Settings, messages: Iterable[tuple[bytes | None, bytes, str]], topic: str, *,
                    total: int | None = None, rate: float | None = None, progress: bool = True,
                    visit: VisitCadence | None = None) -> dict[str, Any]:
    """Produce (key, value, where-from) messages to ``topic`` idempotently, at ``rate`` per second or in visit
    bursts if given, and wait until the broker acknowledged every one (raises `StampflowError` otherwise)."""
    from tqdm import tqdm

    if rate is not None and rate <= 0:
        raise StampflowError("--rate must be positive")
    if rate is not None and visit is not None:
        raise StampflowError("--visit-size/--visit-interval and --rate are two different pacings; pick one")
    k = settings.kafka
    check_broker(k.bootstrap_servers, k.common)
    conf = {"bootstrap.servers": k.bootstrap_servers, "enable.idempotence": True, "acks": "all",
            "linger.ms": 20, "compression.type": k.compression, **k.common, **k.producer}
    conf.pop("transactional.id", None)
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg) -> None:
        if err is not None:
            errors.append(err.str())

    try:
        producer = Producer(conf)
    except KafkaException as exc:
        raise StampflowError(f"invalid Kafka producer configuration: {exc.args[0].str()}") from None
    bar = tqdm(total=total, unit="msg", desc=f"replay → {topic}", disable=not progress or None, file=sys.stderr)
    sent = nbytes = 0
    too_large: list[str] = []
    visits: list[dict[str, Any]] = []
    late = 0

    def produce(key: bytes | None, value: bytes, where: str) -> None:
        nonlocal sent, nbytes
        if not _produce(producer, topic, value, on_delivery, key):
            too_large.append(where)
            print(f"stampflow replay: skipped {where}: {len(value)} bytes is more than the producer's "
                  f"message.max.bytes", file=sys.stderr)
            return
        sent += 1
        nbytes += len(value)
        producer.poll(0)
        bar.update(1)

    t0 = time.monotonic()
    if visit is None:
        for key, value, where in messages:
            produce(key, value, where)
            if rate is not None:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    else:
        # A visit is read into memory before its slot, so reading files never stretches a burst: it goes out
        # as fast as the producer takes it (memory: one visit's messages).
        it = iter(messages)
        origin = None  # the first burst's start: visit k is due at origin + k * interval
        while burst := list(islice(it, visit.size)):
            if origin is None:
                origin = time.monotonic()
            due = origin + len(visits) * visit.interval_s
            if time.monotonic() > due + 0.05:  # the previous burst (or reading this one) overran its slot
                late += 1
            while (wait := due - time.monotonic()) > 0:
                producer.poll(min(wait, 0.1))  # serve delivery reports while waiting
            before, started = sent, time.monotonic()
            visits.append({"visit": len(visits), "start_unix": round(time.time(), 6), "messages": 0})
            for key, value, where in burst:
                produce(key, value, where)
            visits[-1].update(messages=sent - before, queued_s=round(time.monotonic() - started, 3))
    remaining = producer.flush(max(30.0, k.delivery_timeout_s))
    bar.close()
    elapsed = time.monotonic() - t0
    if remaining or errors:
        raise StampflowError(f"replay to {topic}: {remaining} messages unacknowledged, {len(errors)} delivery "
                             f"errors ({'; '.join(errors[:3])})")
    stats = {"topic": topic, "messages": sent, "skipped_too_large": len(too_large), "bytes": nbytes,
             "seconds": round(elapsed, 3), "messages_per_s": round(sent / max(elapsed, 1e-9), 1)}
    if visit is not None:
        stats.update(visit_size=visit.size, visit_interval_s=visit.interval_s, late_visits=late, visits=visits)
    return stats
