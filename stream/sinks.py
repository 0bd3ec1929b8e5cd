"""Where results and dead letters go: Kafka (idempotent or transactional producer) or files.

Every sink has the same contract: ``write_*`` queue typed records; ``commit(source, batch)`` returns only when
everything queued is durably acknowledged and the batch's source offsets are committed, and raises
`PublishError` (committing nothing) otherwise. How the two are tied together is the sink's business, so the
engine never asks which sink or source it has: a transactional Kafka sink sends the offsets inside its
transaction, every other sink waits for acknowledgement and then asks the source to commit.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from fastavro.write import Writer
from confluent_kafka import KafkaError, KafkaException, Producer

from schemas.errors import StampflowError
from schemas.packet import DeadLetter
from schemas.results import ClassificationResult, DeadLetterRecord, encode_schemaless, load_schema
from stream.results import encode_result
from stream.sources import Item, Source, TransactionalSource

log = logging.getLogger(__name__)

RESULT_HEADERS = [("content-type", b"application/avro"), ("stampflow-schema", b"stampflow.classification.v2.1")]
DEAD_LETTER_HEADERS = [("content-type", b"application/avro"), ("stampflow-schema", b"stampflow.dead_letter.v1")]


class PublishError(StampflowError):
    """The sink could not confirm every result of a batch: offsets must not be committed."""

    exit_code = 1


class Sink(Protocol):
    def write_results(self, results: list[ClassificationResult]) -> None: ...
    def write_dead_letters(self, letters: list[DeadLetter]) -> None: ...
    def commit(self, source: Source, batch: list[Item]) -> None: ...
    def close(self) -> None: ...


class KafkaSink:
    """Results keyed by candid, dead letters keyed by origin; one producer, so one transaction can hold both."""

    def __init__(self, producer_config: dict[str, Any], result_topic: str, dead_letter_topic: str,
                 code_version: str, delivery_timeout_s: float, transactional: bool = False):
        self.result_topic = result_topic
        self.dead_letter_topic = dead_letter_topic
        self.code_version = code_version
        self.delivery_timeout_s = delivery_timeout_s
        self.transactional = transactional
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._acked = 0
        conf = dict(producer_config)
        conf.setdefault("error_cb", self._on_error)
        conf.setdefault("logger", logging.getLogger("librdkafka.producer"))
        try:
            self.producer = Producer(conf)
        except KafkaException as exc:
            raise StampflowError(f"invalid Kafka producer configuration: {exc.args[0].str()}") from None
        self.max_message_bytes = int(conf.get("message.max.bytes", 1_000_000))
        self._failed = False
        if transactional:
            try:
                self.producer.init_transactions(delivery_timeout_s)
            except KafkaException as exc:
                raise StampflowError(f"cannot initialise Kafka transactions: {exc.args[0].str()}") from None
        self._in_txn = False

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            with self._lock:
                self._errors.append(f"fatal producer error: {err.str()}")
        else:
            log.warning("kafka producer: %s", err.str())

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        with self._lock:
            if err is not None:
                self._errors.append(f"{msg.topic()}: {err.str()}")
            else:
                self._acked += 1

    def begin(self) -> None:
        if self.transactional and not self._in_txn:
            self.producer.begin_transaction()
            self._in_txn = True

    def _produce(self, topic: str, value: bytes, key: bytes | None, headers: list) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.1)
            except KafkaException as exc:
                self._failed = True
                raise PublishError(f"could not produce to {topic}: {exc.args[0].str()}; offsets were not "
                                   f"committed") from None

    def write_results(self, results: list[ClassificationResult]) -> None:
        self.begin()
        for r in results:
            self._produce(self.result_topic, encode_result(r), str(r.candid).encode(), RESULT_HEADERS)
        self.producer.poll(0)

    def write_dead_letters(self, letters: list[DeadLetter]) -> None:
        self.begin()
        for dl in letters:
            value = encode_schemaless(DeadLetterRecord.of(self._fit(dl), self.code_version).record(), "dead_letter")
            self._produce(self.dead_letter_topic, value, dl.origin.describe().encode(), DEAD_LETTER_HEADERS)
        self.producer.poll(0)

    def _fit(self, dl: DeadLetter) -> DeadLetter:
        """A packet larger than the broker takes cannot be kept whole on the dead-letter topic; keep its head,
        and its length and sha256 in the error, rather than crash-looping on it."""
        room = self.max_message_bytes - 4096 - len(dl.error) - 512
        if len(dl.value) <= room:
            return dl
        digest = hashlib.sha256(dl.value).hexdigest()
        note = (f" [value truncated for the dead-letter topic: original {len(dl.value)} bytes, sha256 {digest}, "
                f"first {room} bytes kept]")
        return DeadLetter(value=dl.value[:room], origin=dl.origin, stage=dl.stage, error=dl.error + note,
                          error_type=dl.error_type, time=dl.time, candid=dl.candid)

    def flush(self) -> None:
        remaining = self.producer.flush(self.delivery_timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if remaining or errors:
            self._failed = True
            if not errors:
                raise PublishError(f"the broker did not acknowledge {remaining} results within "
                                   f"{self.delivery_timeout_s:g}s; offsets were not committed")
            # One line: each distinct delivery error once, with how many messages it failed.
            detail = "; ".join(f"{e} ({n} messages)" if n > 1 else e for e, n in Counter(errors).most_common(3))
            raise PublishError(f"results were not delivered ({detail}); offsets were not committed")

    def commit(self, source: Source, batch: list[Item]) -> None:
        """At-least-once: wait for every acknowledgement, then let the source commit. Exactly-once: the
        batch's offsets go into the producer's transaction, so results and progress become visible together."""
        self.flush()  # raises PublishError: nothing is committed then
        if not self.transactional:
            source.commit(batch)
            return
        if not isinstance(source, TransactionalSource):
            raise StampflowError("exactly-once delivery needs a source whose offsets can join a Kafka "
                                 "transaction (a Kafka consumer); set kafka.exactly_once to false")
        self.commit_transaction(source.next_offsets(batch), source.group_metadata())

    def commit_transaction(self, offsets: list, group_metadata: Any, attempts: int = 3) -> None:
        """Exactly-once: results, dead letters and the consumed offsets become visible together."""
        self.begin()
        for attempt in range(1, attempts + 1):
            try:
                self.producer.send_offsets_to_transaction(offsets, group_metadata, self.delivery_timeout_s)
                self.producer.commit_transaction(self.delivery_timeout_s)
                self._in_txn = False
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and attempt < attempts:
                    log.warning("transaction commit: %s; retrying (%d/%d)", err.str(), attempt, attempts)
                    continue
                self._failed = True
                if err.txn_requires_abort():
                    self._abort()
                    raise PublishError(f"transaction aborted ({err.str()}): no result and no offset of this "
                                       f"batch was committed") from None
                raise PublishError(f"transaction failed ({err.str()}); its results stay invisible to "
                                   f"read_committed consumers and its offsets were not committed") from None

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(min(self.delivery_timeout_s, 10.0))
        except KafkaException as exc:
            log.warning("abort_transaction failed: %s", exc.args[0].str())
        self._in_txn = False

    def close(self) -> None:
        # After a failed delivery nothing more will be acknowledged soon; do not hold shutdown for minutes.
        timeout = 5.0 if self._failed else self.delivery_timeout_s
        if self._in_txn:
            self._abort()
        self.producer.flush(timeout)


class FileSink:
    """File mode: results as JSON lines or an Avro container; dead letters as an Avro container (original bytes)
    plus a JSON-lines index a person can read."""

    def __init__(self, results_path: Path, fmt: str, dead_letter_dir: Path, code_version: str):
        self.results_path = Path(results_path)
        self.fmt = fmt
        self.dead_letter_dir = Path(dead_letter_dir)
        self.code_version = code_version
        self.results_written = 0
        self.dead_letters_written = 0
        try:
            self.results_path.parent.mkdir(parents=True, exist_ok=True)
            self._results = open(self.results_path, "wb")
            if self.dead_letter_dir.exists() and not self.dead_letter_dir.is_dir():
                raise StampflowError(f"dead-letter directory {self.dead_letter_dir} exists and is not a directory")
        except OSError as exc:
            raise StampflowError(f"cannot write results to {self.results_path}: {exc.strerror}") from None
        self._avro_buffer: list[dict[str, Any]] = []
        self._dl_avro = None
        self._dl_index = None
        self._dl_buffer: list[dict[str, Any]] = []
        self._results_writer: Writer | None = None
        self._dl_writer: Writer | None = None
        if fmt == "avro":  # a run with no results still leaves a valid, empty container
            self._results_writer = Writer(self._results, load_schema("classification"), codec="deflate")
            self._results_writer.flush()

    def write_results(self, results: list[ClassificationResult]) -> None:
        if self.fmt == "jsonl":
            for r in results:
                self._results.write(json.dumps(r.record(), separators=(",", ":")).encode() + b"\n")
        else:
            self._avro_buffer.extend(r.record() for r in results)
        self.results_written += len(results)

    def write_dead_letters(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        if self._dl_index is None:
            self.dead_letter_dir.mkdir(parents=True, exist_ok=True)
            self._dl_avro = open(self.dead_letter_dir / "dead_letters.avro", "wb")
            self._dl_index = open(self.dead_letter_dir / "dead_letters.jsonl", "w")
        for dl in letters:
            rec = DeadLetterRecord.of(dl, self.code_version).record()
            self._dl_buffer.append(rec)
            summary = {k: v for k, v in rec.items() if k != "value"}
            summary["bytes"] = len(dl.value)
            summary["sha256"] = hashlib.sha256(dl.value).hexdigest()
            self._dl_index.write(json.dumps(summary) + "\n")
        self.dead_letters_written += len(letters)

    def commit(self, source: Source, batch: list[Item]) -> None:
        """Files are durable once flushed; the source (a file iterator) then records its progress."""
        self.flush()
        source.commit(batch)

    def flush(self) -> None:
        if self._avro_buffer:
            if self._results_writer is None:
                self._results_writer = Writer(self._results, load_schema("classification"), codec="deflate")
            for rec in self._avro_buffer:
                self._results_writer.write(rec)
            self._results_writer.flush()
            self._avro_buffer = []
        if self._dl_buffer:
            if self._dl_writer is None:
                self._dl_writer = Writer(self._dl_avro, load_schema("dead_letter"), codec="deflate")
            for rec in self._dl_buffer:
                self._dl_writer.write(rec)
            self._dl_writer.flush()
            self._dl_buffer = []
            self._dl_index.flush()
            self._dl_avro.flush()
        self._results.flush()

    def close(self) -> None:
        self.flush()
        self._results.close()
        if self._dl_avro is not None:
            self._dl_avro.close()
            self._dl_index.close()


class MemorySink:
    """Keeps results and dead letters in lists: for in-process runs (evaluations over alert files, tests) that
    want the engine's exact results without a file or broker. Acknowledged as soon as written."""

    def __init__(self) -> None:
        self.results: list[ClassificationResult] = []
        self.dead_letters: list[DeadLetter] = []

    def write_results(self, results: list[ClassificationResult]) -> None:
        self.results.extend(results)

    def write_dead_letters(self, letters: list[DeadLetter]) -> None:
        self.dead_letters.extend(letters)

    def commit(self, source: Source, batch: list[Item]) -> None:
        source.commit(batch)

    def close(self) -> None:
        return None
