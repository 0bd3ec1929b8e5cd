"""A real schema registry: Apicurio Registry 3.0.9 (deploy/registry/apicurio.sh, in-memory storage, Confluent
API under /apis/ccompat/v7) loaded with Rubin's schemas from lsst-alert-packet under Rubin's ids; the
Confluent-framed path end to end through it and the real broker, registry outage included."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas.errors import PacketError, TransientError
from schemas.packet import DeadLetter, Framing, Origin, RawMessage
from schemas.rubin import (encode_rubin_alert, rubin_sample_alert, rubin_schema_id, rubin_schema_text,
                           rubin_schema_versions)
from stream.decode import Decoder
from stream.rubin_registry import load_rubin_schemas, registry_root
from stream.schema_registry import RegistrySchemaResolver, SchemaResolutionError, SchemaResolver
from tests.integration.conftest import (REPO, committed_offsets, decode_dead_letters, decode_results, end_offsets,
                                        read_topic)

pytestmark = pytest.mark.integration

SCRIPT = REPO / "deploy" / "registry" / "apicurio.sh"
VERSIONS = rubin_schema_versions()
UNKNOWN_ID = 1199  # no Rubin schema 11.99: the registry answers 404


class Apicurio:
    """The registry of this session: started once, stopped and restarted (same port) by the outage test."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.url: str = ""
        self.start_seconds: list[float] = []

    def start(self, port: int | None = None) -> str:
        env = dict(os.environ)
        if port is not None:
            env["STAMPFLOW_REGISTRY_PORT"] = str(port)
        t0 = time.monotonic()
        proc = subprocess.run(["bash", str(SCRIPT), "start", str(self.run_dir)], capture_output=True, text=True,
                              env=env, timeout=180)
        if proc.returncode != 0:
            pytest.fail(f"could not start Apicurio Registry: {proc.stderr[-3000:]}")
        self.start_seconds.append(time.monotonic() - t0)
        self.url = proc.stdout.strip().splitlines()[-1]
        assert self.url == (self.run_dir / "url").read_text().strip()
        load_rubin_schemas(self.url)
        return self.url

    def stop(self) -> None:
        proc = subprocess.run(["bash", str(SCRIPT), "stop", str(self.run_dir)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr

    @property
    def port(self) -> int:
        return int(self.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


@pytest.fixture(scope="session")
def apicurio(tmp_path_factory):
    registry = Apicurio(tmp_path_factory.mktemp("apicurio-run"))
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()
        print(f"\nApicurio start-up seconds: {[round(s, 1) for s in registry.start_seconds]}")


def message(value: bytes, index: int = 0) -> RawMessage:
    return RawMessage(value=value, origin=Origin(file="registry", index=index))


def test_registry_serves_rubin_schemas_under_rubin_ids(apicurio):
    for major, minor in VERSIONS:
        sid = rubin_schema_id(major, minor)
        with urllib.request.urlopen(f"{apicurio.url}/schemas/ids/{sid}", timeout=10) as r:
            served = json.loads(r.read())
        assert json.loads(served["schema"]) == json.loads(rubin_schema_text(major, minor))
        with urllib.request.urlopen(f"{apicurio.url}/subjects/lsst-alerts-v{major}.{minor}-value/versions/latest",
                                    timeout=10) as r:
            assert json.loads(r.read())["id"] == sid
    # Registering the same schema again (as a producer would) returns Rubin's id, not a new one.
    body = json.dumps({"schema": rubin_schema_text(7, 1)}).encode()
    request = urllib.request.Request(f"{apicurio.url}/subjects/stampflow-check-value/versions", data=body,
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert json.loads(r.read())["id"] == 701
    # A new schema gets an id after the highest imported one: no later registration collides with Rubin's ids.
    other = json.dumps({"type": "record", "name": "stampflow.check", "fields": [{"name": "a", "type": "int"}]})
    request = urllib.request.Request(f"{apicurio.url}/subjects/stampflow-other-value/versions",
                                     data=json.dumps({"schema": other}).encode(),
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert json.loads(r.read())["id"] > 1101
    assert load_rubin_schemas(apicurio.url)[701] == "7.1"  # idempotent: nothing imported twice
    assert registry_root(apicurio.url) + "/apis/ccompat/v7" == apicurio.url


def test_every_version_decodes_through_the_registry(apicurio, tmp_path):
    decoder = Decoder(apicurio.url, framing=Framing.CONFLUENT)
    assert isinstance(decoder.resolver, RegistrySchemaResolver)
    for i, (major, minor) in enumerate(VERSIONS):
        packet = decoder.decode(message(encode_rubin_alert(rubin_sample_alert(major, minor), major, minor), i))
        assert packet.survey == "LSST" and packet.schema_version == f"lsst.v{major}_{minor}"
        assert packet.flags == ["no_stamps"]
    unknown = b"\x00" + UNKNOWN_ID.to_bytes(4, "big") + b"\x02" * 16
    with pytest.raises(SchemaResolutionError, match=f"schema id {UNKNOWN_ID} not found at .*/schemas/ids/"):
        decoder.decode(message(unknown))
    dead = decoder.decode_or_dead_letter(message(unknown))
    assert isinstance(dead, DeadLetter) and dead.stage == "decode" and str(UNKNOWN_ID) in dead.error
    # What the settings build with both: the directory pins an id, the registry answers the rest.
    (tmp_path / "701.avsc").write_text(rubin_schema_text(7, 1))
    both = Decoder(SchemaResolver(schema_dir=tmp_path, registry_url=apicurio.url))
    for major, minor in ((7, 1), (11, 1)):
        assert both.decode(message(encode_rubin_alert(rubin_sample_alert(major, minor), major, minor))).survey == "LSST"


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0


def test_confluent_path_end_to_end_with_a_registry_outage(apicurio, kafka_bootstrap, topics, start_worker):
    """Worker -> registry -> broker: Rubin-framed alerts decode through the registry; an unknown id is one dead
    letter; with the registry stopped, an id the worker has not cached is a transient error (the worker stops,
    nothing is dead-lettered or committed past it); after the registry is back, a restarted worker finishes."""
    first, second = VERSIONS[:8], VERSIONS[8:]
    samples = {v: encode_rubin_alert(rubin_sample_alert(*v), *v) for v in VERSIONS}
    unknown = b"\x00" + UNKNOWN_ID.to_bytes(4, "big") + samples[(11, 1)][5:]
    _produce(kafka_bootstrap, topics["input"], [samples[v] for v in first] + [unknown])

    env = {"STAMPFLOW_SCHEMAS__REGISTRY_URL": apicurio.url, "STAMPFLOW_BATCH__MAX_SIZE": "4",
           "STAMPFLOW_BATCH__MAX_WAIT_MS": "50"}
    worker = start_worker(**env)
    results = decode_results(read_topic(kafka_bootstrap, topics["results"], expect=len(first), timeout=120))
    dead = decode_dead_letters(read_topic(kafka_bootstrap, topics["dead"], expect=1, timeout=60))
    assert len(results) == len(first) and all(r["survey"] == "LSST" for r in results)
    assert all(r["flags"] == ["no_stamps", "unrouted"] for r in results)
    assert len(dead) == 1 and dead[0]["stage"] == "decode" and f"schema id {UNKNOWN_ID} not found" in dead[0]["error"]
    deadline = time.time() + 30  # everything so far is acknowledged and committed
    group, topic = f"it-{topics['input']}", topics["input"]
    while committed_offsets(kafka_bootstrap, group, topic) != end_offsets(kafka_bootstrap, topic):
        assert time.time() < deadline, "offsets of the first visit were never committed"
        time.sleep(0.5)
    committed_before = end_offsets(kafka_bootstrap, topic)

    # Outage: the registry goes away; the next alerts use ids this worker has never fetched.
    decoder = Decoder(apicurio.url)  # in-process too: what the worker's decoder does, step by step
    assert decoder.decode(message(samples[(7, 1)])).schema_version == "lsst.v7_1"
    port = apicurio.port
    apicurio.stop()
    assert decoder.decode(message(samples[(7, 1)])).schema_version == "lsst.v7_1"  # cached per id (immutable)
    with pytest.raises(TransientError, match="schema registry unreachable for schema id 1101") as info:
        decoder.decode(message(samples[(11, 1)]))
    assert not isinstance(info.value, PacketError)  # the engine would dead-letter (and commit) a PacketError
    with pytest.raises(TransientError):
        decoder.decode_or_dead_letter(message(samples[(11, 1)]))
    _produce(kafka_bootstrap, topic, [samples[v] for v in second])
    assert worker.wait(90) == 1, worker.log()
    log = worker.log()
    assert "schema registry unreachable" in log and "Traceback" not in log
    assert committed_offsets(kafka_bootstrap, group, topic) == committed_before  # nothing committed past it
    assert len(read_topic(kafka_bootstrap, topics["dead"], timeout=10, idle=2)) == 1  # no new dead letter
    assert len(read_topic(kafka_bootstrap, topics["results"], timeout=10, idle=2)) == len(first)

    # Recovery: the registry is back at the same address; a restarted worker decodes what was left.
    apicurio.start(port)
    assert decoder.decode(message(samples[(11, 1)])).schema_version == "lsst.v11_1"  # failures are not cached
    again = start_worker(**env)
    results = decode_results(read_topic(kafka_bootstrap, topics["results"], expect=len(VERSIONS), timeout=120))
    coords = {(r["source"]["partition"], r["source"]["offset"]) for r in results}
    assert len(results) == len(coords) == len(VERSIONS)  # one result per alert, none twice
    assert len(decode_dead_letters(read_topic(kafka_bootstrap, topics["dead"], timeout=10, idle=2))) == 1
    deadline = time.time() + 30
    while committed_offsets(kafka_bootstrap, group, topic) != end_offsets(kafka_bootstrap, topic):
        assert time.time() < deadline, "offsets after recovery were never committed"
        time.sleep(0.5)
    again.signal(15)
    assert again.wait(60) == 0, again.log()

