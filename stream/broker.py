"""The one reachability check of a Kafka broker, shared by the worker and replay."""
from __future__ import annotations

import logging
from typing import Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from schemas.errors import StampflowError

log = logging.getLogger(__name__)


def check_broker(bootstrap: str, common: dict, timeout_s: float = 10.0, topics: Sequence[str] = ()) -> None:
    """Fail fast with one line when the broker cannot be reached, instead of librdkafka retrying forever;
    warn about input topics that do not exist yet (a worker may legitimately start before its producer)."""
    # librdkafka's own connection-refused chatter would bury the one line we print.
    conf = {"bootstrap.servers": bootstrap, **common, "log_level": 0}
    try:
        meta = AdminClient(conf).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise StampflowError(f"cannot reach Kafka at {bootstrap} within {timeout_s:g}s "
                             f"({exc.args[0].str()})") from None
    except ValueError as exc:  # librdkafka rejects a setting before connecting
        raise StampflowError(f"invalid Kafka configuration: {exc}") from None
    for topic in topics:
        info = meta.topics.get(topic)
        if info is None:
            log.warning("input topic %s does not exist on %s yet; waiting for it", topic, bootstrap)
        elif info.error is not None:
            raise StampflowError(f"input topic {topic} on {bootstrap}: {info.error.str()}")
