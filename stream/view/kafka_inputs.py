"""The viewer's Kafka input: a result topic, the input topic its worker consumed, and the dead-letter topic.

Each topic is read from its beginning up to the end it had when the viewer started (a snapshot: the page does not
change under the reader), with a consumer that joins no group and commits nothing, so a running worker's group is
never disturbed. Results are the worker's schemaless Avro (the ``stampflow-schema`` header names the version);
their ``source`` (topic, partition, offset) finds the input message in the spool.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from schemas.errors import StampflowError
from schemas.packet import Origin, RawMessage
from schemas.results import decode_schemaless
from stream.broker import check_broker
from stream.decode import Decoder
from stream.view.inputs import ViewData, describe, spool_messages

log = logging.getLogger(__name__)

_VERSION_HEADER = "stampflow-schema"


def read_topic(conf: dict, topic: str, timeout_s: float = 30.0) -> Iterator[tuple[bytes, Origin, dict]]:
    """(value, origin, headers) of every message of ``topic`` up to its end at call time, in partition order."""
    consumer = Consumer({**conf, "group.id": f"stampflow-view-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False,
                         "enable.auto.offset.store": False, "isolation.level": "read_committed",
                         # EOF events end a partition even when its last offsets are transaction markers
                         "enable.partition.eof": True,
                         "max.partition.fetch.bytes": 16 << 20, "fetch.max.bytes": 64 << 20})
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise StampflowError(f"Kafka topic {topic} does not exist"
                                 + (f" ({meta.error.str()})" if meta is not None and meta.error else ""))
        ends: dict[int, int] = {}
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends:
            msg = consumer.poll(1.0)
            if msg is None:
                if time.monotonic() > deadline:
                    raise StampflowError(f"Kafka topic {topic}: no message for {timeout_s:g}s before its end "
                                         f"(partitions {sorted(ends)} unfinished)")
                continue
            deadline = time.monotonic() + timeout_s
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    ends.pop(msg.partition(), None)
                    continue
                raise StampflowError(f"Kafka topic {topic}: {msg.error().str()}")
            p, off = msg.partition(), msg.offset()
            headers = {k: (v.decode("utf-8", "replace") if v else "") for k, v in (msg.headers() or [])}
            yield msg.value() or b"", Origin(topic=topic, partition=p, offset=off), headers
            if p in ends and off + 1 >= ends[p]:
                del ends[p]
    except KafkaException as exc:
        raise StampflowError(f"Kafka error reading {topic}: {exc.args[0].str()}") from None
    finally:
        consumer.close()


def _schema_version(headers: dict[str, str]) -> str | None:
    name = headers.get(_VERSION_HEADER, "")  # e.g. stampflow.classification.v2.1
    return name.rsplit(".v", 1)[1] if ".v" in name else None


def load_kafka(conf: dict, result_topic: str, input_topics: list[str], dead_letter_topic: str | None,
               decoder: Decoder) -> ViewData:
    check_broker(conf["bootstrap.servers"], {k: v for k, v in conf.items() if k != "bootstrap.servers"})
    data = ViewData()
    m = 0
    for topic in input_topics:
        m += spool_messages((RawMessage(value=v, origin=o) for v, o, _ in read_topic(conf, topic)), data, decoder)
    n = 0
    for value, origin, headers in read_topic(conf, result_topic):
        where = f"{origin.describe()} (result topic)"
        try:
            rec = decode_schemaless(value, "classification", _schema_version(headers) or None)
        except Exception as exc:  # noqa: BLE001 - bytes from a topic: any decode failure is the message's fault
            raise StampflowError(f"{where}: not a stampflow result ({exc.__class__.__name__}: {exc})") from None
        data.add_result(rec, None, where)
        n += 1
    if n == 0:
        raise StampflowError(f"Kafka topic {result_topic} holds no results")
    d = 0
    if dead_letter_topic:
        for value, origin, _ in read_topic(conf, dead_letter_topic):
            try:
                data.add_dead_letter(decode_schemaless(value, "dead_letter"))
            except Exception as exc:  # noqa: BLE001
                raise StampflowError(f"{origin.describe()} (dead-letter topic): not a stampflow dead letter "
                                     f"({exc.__class__.__name__}: {exc})") from None
            d += 1
    data.warn_unmatched()
    data.described = describe(n, f"topic {result_topic}", m, [f"topic {t}" for t in input_topics],
                              d if dead_letter_topic else None)
    return data
