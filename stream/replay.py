"""Replay archival data into Kafka.

Alert files: every format the file source reads, byte-faithful. Messages are produced exactly as the file
source yields them, including files that cannot be parsed (their original bytes), so a replay of a night
reproduces its bad packets too and they land in the dead-letter topic.

Archival cutout sets (Griese, FR-DEEP, MiraBest, DeepMerge, CANDELS/CLASH, SDSS): the caller passes an iterator
of encoded cutout packets (schemas/cutout_packet), keyed by their id; `replay_messages` produces them the same way.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from confluent_kafka import KafkaError, KafkaException, Producer

from schemas.errors import StampflowError
from schemas.packet import DeadLetter
from stream.broker import check_broker
from stream.config import Settings
from stream.file_source import FileSource


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
           progress: bool = True) -> dict[str, Any]:
    """Alert files (every FileSource format) into ``topic``."""
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

    stats = replay_messages(settings, messages(), topic, total=source.count() * repeat, rate=rate, progress=progress)
    stats["unreadable_files_sent_raw"] = unreadable
    return stats


def replay_messages(settings: Settings, messages: Iterable[tuple[bytes | None, bytes, str]], topic: str, *,
                    total: int | None = None, rate: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Produce (key, value, where-from) messages to ``topic`` idempotently, at ``rate`` per second if given, and
    wait until the broker acknowledged every one (raises `StampflowError` otherwise)."""
    from tqdm import tqdm

    if rate is not None and rate <= 0:
        raise StampflowError("--rate must be positive")
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
    t0 = time.monotonic()
    for key, value, where in messages:
        if not _produce(producer, topic, value, on_delivery, key):
            too_large.append(where)
            print(f"stampflow replay: skipped {where}: {len(value)} bytes is more than the producer's "
                  f"message.max.bytes", file=sys.stderr)
            continue
        sent += 1
        nbytes += len(value)
        producer.poll(0)
        bar.update(1)
        if rate is not None:
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    remaining = producer.flush(max(30.0, k.delivery_timeout_s))
    bar.close()
    elapsed = time.monotonic() - t0
    if remaining or errors:
        raise StampflowError(f"replay to {topic}: {remaining} messages unacknowledged, {len(errors)} delivery "
                             f"errors ({'; '.join(errors[:3])})")
    return {"topic": topic, "messages": sent, "skipped_too_large": len(too_large), "bytes": nbytes,
            "seconds": round(elapsed, 3), "messages_per_s": round(sent / max(elapsed, 1e-9), 1)}
