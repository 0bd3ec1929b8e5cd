"""A secured cluster: a real broker with a SASL_SSL listener (SCRAM-SHA-512 users made by `kafka-storage format
--add-scram`, a CA and broker certificate made here with openssl). The worker connects with `kafka.common`
settings only, classifies real alerts end to end, fails fast with one line on a wrong password or an unknown CA,
and never lets the password out: logs at DEBUG (librdkafka's security debug included), `config show`,
/metrics, dead letters and error lines are all searched for it."""
from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Worker, clean_env, create_topics, metric_value, read_topic, worker_env
from tests.integration.faults import Feeder, OwnBroker, report, tally, wait_until

pytestmark = pytest.mark.integration

USER = "stampflow-worker"


def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def make_ca(d: Path, name: str) -> Path:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)
    return d / f"{name}.pem"


def make_broker_keystore(d: Path, ca: str, password: str) -> Path:
    """Broker key and certificate signed by ``ca`` (SAN 127.0.0.1 and localhost: librdkafka checks the host),
    in a PKCS12 keystore the broker reads."""
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "broker.key",
            "-out", "broker.csr", cwd=d)
    openssl("x509", "-req", "-in", "broker.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "broker.pem", cwd=d)
    openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", f"{ca}.pem",
            "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{password}", cwd=d)
    return d / "broker.p12"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    password = "pw-" + secrets.token_hex(12)  # the secret every check greps for
    keystore_password = secrets.token_hex(8)
    ca = make_ca(d, "stampflow-test-ca")
    other_ca = make_ca(d, "some-other-ca")
    keystore = make_broker_keystore(d, "stampflow-test-ca", keystore_password)
    env = clean_env(STAMPFLOW_KAFKA_SSL_KEYSTORE=str(keystore), STAMPFLOW_KAFKA_SSL_KEYSTORE_PASSWORD=keystore_password,
                    STAMPFLOW_KAFKA_SCRAM_USERS=f"{USER}={password}")
    broker = OwnBroker(d / "kafka", env=env)
    common = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER,
              "sasl.password": password, "ssl.ca.location": str(ca)}
    try:
        yield {"bootstrap": broker.bootstrap, "common": common, "password": password, "other_ca": str(other_ca)}
    finally:
        broker.stop()


def serve_once(bootstrap: str, common: dict, timeout: float = 90) -> tuple[subprocess.CompletedProcess, float]:
    env = clean_env(STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS=bootstrap, STAMPFLOW_KAFKA__COMMON=json.dumps(common),
                    STAMPFLOW_LOG_LEVEL="DEBUG", STAMPFLOW_METRICS__ENABLED="false")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "stream", "serve"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def test_worker_classifies_real_alerts_over_sasl_ssl_and_never_leaks_the_password(secure, tmp_path, data_dir):
    boot, common, password = secure["bootstrap"], secure["common"], secure["password"]
    topics = create_topics(boot, common)
    # Only kafka.common carries the security settings; DEBUG logging and librdkafka's security debug are on, so
    # "any level" includes the handshake chatter.
    w = Worker(worker_env(boot, topics, tmp_path, STAMPFLOW_KAFKA__COMMON=json.dumps(common),
                          STAMPFLOW_LOG_LEVEL="DEBUG", STAMPFLOW_KAFKA__CONSUMER='{"debug": "security"}',
                          STAMPFLOW_BATCH__MAX_SIZE="32"), tmp_path / "worker.log")
    try:
        w.wait_metrics()
        paths = [data_dir / "ztf_alerts/fink-client", data_dir / "ztf_alerts/ampel/ztf_public_20180601_corrupt"]
        feeder = Feeder(boot, topics["input"], paths, rate=200, common=common)
        n = feeder.finish()

        def done() -> float:
            text = w.metrics()
            return (metric_value(text, "stampflow_results_published_total")
                    + metric_value(text, "stampflow_dead_letters_total"))

        wait_until(lambda: done() >= n, 120, "every alert to be answered")
        metrics_text = w.metrics()
        t = tally(boot, topics, common=common)
        w.signal(signal.SIGTERM)
        assert w.wait(60) == 0, w.log()
    finally:
        w.kill()
    report("secure_end_to_end", tally=t.line())
    assert t.inputs == n and not t.lost and t.duplicated == 0, t.line()
    assert t.dead_letters == 5  # the five corrupt AMPEL files, dead-lettered through the secured producer
    labels = {r["predictions"][0]["label"] for r in t.records if r["predictions"]}
    assert labels == {"star", "galaxy"}

    log = w.log_path.read_text(errors="replace")
    assert "SASL" in log or "sasl" in log, "the security debug should have logged the handshake"
    dead = read_topic(boot, topics["dead"], expect=5, timeout=60, common=common)  # raw bytes, keys included
    dead_text = b"".join(m.value() + (m.key() or b"") for m in dead)
    shown = subprocess.run([sys.executable, "-m", "stream", "config", "show"], cwd=REPO, capture_output=True,
                           text=True, timeout=60, env=clean_env(STAMPFLOW_KAFKA__COMMON=json.dumps(common)))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["settings"]["kafka"]["common"]["sasl.password"] == "********"
    for where, text in {"worker log": log, "/metrics": metrics_text, "config show": shown.stdout + shown.stderr,
                        "dead letters": dead_text.decode("latin-1")}.items():
        assert password not in text, f"the password leaked into {where}"
    assert all(password not in json.dumps(d, default=str) for d in t.dead_records)


@pytest.mark.parametrize("fault", ["wrong password", "unknown CA"])
def test_wrong_secret_is_one_line_and_exit_2(secure, fault):
    common = dict(secure["common"])
    if fault == "wrong password":
        common["sasl.password"] = "not-" + secure["password"]
    else:
        common["ssl.ca.location"] = secure["other_ca"]
    proc, seconds = serve_once(secure["bootstrap"], common)
    report(f"secure_{fault.replace(' ', '_')}", exit_status=proc.returncode, seconds=f"{seconds:.1f}",
           line=repr(proc.stderr.strip().splitlines()[-1]))
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"stampflow: cannot connect to Kafka at {secure['bootstrap']}: "), last
    assert ("authentication failed" if fault == "wrong password" else "certificate") in last.lower(), last
    assert "Traceback" not in proc.stderr
    assert seconds < 60
    for text in (proc.stderr, proc.stdout):
        assert secure["password"] not in text and common["sasl.password"] not in text
