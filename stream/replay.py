"""Replay archival alerts into Kafka: every file format the file source reads, byte-faithful.

Messages are produced exactly as the file source yields them, including files that cannot be parsed (their
original bytes), so a replay of a night reproduces its bad packets too and they land in the dead-letter topic.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from stream.config import Settings
from stream.errors import StampflowError
from stream.file_source import FileSource
from stream.packet import DeadLetter


def _produce(producer: Producer, topic: str, value: bytes, on_delivery) -> bool:
    """Queue one message, waiting while the local queue is full; False if it is too large to ever send."""
    while True:
        try:
            producer.produce(topic, value=value, on_delivery=on_delivery)
            return True
        except BufferError:
            producer.poll(0.05)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                return False
            raise StampflowError(f"replay to {topic}: {exc.args[0].str()}") from None


def replay(settings: Settings, paths: list[Path], topic: str, rate: float | None = None, repeat: int = 1,
           progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    from stream.worker import check_broker

    if repeat < 1:
        raise StampflowError("--repeat must be at least 1")
    if rate is not None and rate <= 0:
        raise StampflowError("--rate must be positive")
    source = FileSource(paths)
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
    total = source.count() * repeat
    bar = tqdm(total=total, unit="msg", desc=f"replay → {topic}", disable=not progress or None, file=sys.stderr)
    sent = unreadable = nbytes = 0
    too_large: list[str] = []
    t0 = time.monotonic()
    for _ in range(repeat):
        for item in source.iter_messages():
            if isinstance(item, DeadLetter):
                unreadable += 1
            if not _produce(producer, topic, item.value, on_delivery):
                too_large.append(item.origin.describe())
                print(f"stampflow replay: skipped {item.origin.describe()}: {len(item.value)} bytes is more than "
                      f"the producer's message.max.bytes", file=sys.stderr)
                continue
            sent += 1
            nbytes += len(item.value)
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
    return {"topic": topic, "messages": sent, "unreadable_files_sent_raw": unreadable,
            "skipped_too_large": len(too_large), "bytes": nbytes,
            "seconds": round(elapsed, 3), "messages_per_s": round(sent / max(elapsed, 1e-9), 1)}
