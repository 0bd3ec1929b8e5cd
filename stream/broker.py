"""The one reachability check of a Kafka broker, shared by the worker and replay."""
from __future__ import annotations

import logging
import re
import time
from typing import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from schemas.errors import StampflowError

log = logging.getLogger(__name__)

# Errors no retry can mend: the credentials or the trust chain are wrong. librdkafka would retry them for ever.
_HOPELESS = {KafkaError._AUTHENTICATION: ("authentication failed", "check kafka.common sasl.mechanism, "
                                          "sasl.username and sasl.password"),
             KafkaError._SSL: ("TLS handshake failed", "check kafka.common ssl.ca.location (the CA that signed the "
                               "broker's certificate) and the broker's host name")}
# librdkafka prefixes the broker and suffixes its state machine: neither helps the person reading the line.
_BROKER_PREFIX = re.compile(r"^\w+://[^ ]+/(bootstrap|\d+): ")
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)$")


def check_broker(bootstrap: str, common: dict, timeout_s: float = 10.0, topics: Sequence[str] = ()) -> None:
    """Fail fast with one line when the broker cannot be reached, instead of librdkafka retrying forever;
    warn about input topics that do not exist yet (a worker may legitimately start before its producer).

    A wrong password or an untrusted certificate fails at the first refused handshake (exit status 2), not after
    the timeout: those are the user's to fix, and retrying would only hide them."""
    errors: list[KafkaError] = []
    # librdkafka's own connection-refused chatter would bury the one line we print.
    conf = {"bootstrap.servers": bootstrap, **common, "log_level": 0, "error_cb": errors.append}
    try:
        admin = AdminClient(conf)
    except (KafkaException, ValueError) as exc:  # librdkafka rejects a setting before connecting
        detail = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        raise StampflowError(f"invalid Kafka configuration: {detail}") from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            meta = admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            break
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: the handshake errors arrive there, not in the exception
            hopeless = next((e for e in errors if e.code() in _HOPELESS), None)
            if hopeless is not None:
                what, hint = _HOPELESS[hopeless.code()]
                raise StampflowError(f"cannot connect to Kafka at {bootstrap}: {what} "
                                     f"({_clean(hopeless.str())}); {hint}") from None
            if time.monotonic() >= deadline:
                raise StampflowError(f"cannot reach Kafka at {bootstrap} within {timeout_s:g}s "
                                     f"({exc.args[0].str()})") from None
    for topic in topics:
        info = meta.topics.get(topic)
        if info is None:
            log.warning("input topic %s does not exist on %s yet; waiting for it", topic, bootstrap)
        elif info.error is not None:
            raise StampflowError(f"input topic {topic} on {bootstrap}: {info.error.str()}")


def _clean(message: str) -> str:
    return _STATE_SUFFIX.sub("", _BROKER_PREFIX.sub("", message))
