import json

import pytest

from stream.cli import main
from stream.config import Settings, load_settings
from schemas.errors import ConfigError


def test_every_field_has_a_comment():
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{prefix}{name}.")
    walk(Settings)


def test_env_overrides_yaml_and_nested(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: yaml:1\n  group_id: g1\nbatch:\n  max_size: 32\n")
    monkeypatch.setenv("STAMPFLOW_KAFKA__GROUP_ID", "from-env")
    s = load_settings(cfg)
    assert s.kafka.bootstrap_servers == "yaml:1"
    assert s.kafka.group_id == "from-env"
    assert s.batch.max_size == 32


def test_unknown_keys_are_refused(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch:\n  max_sise: 3\n")
    with pytest.raises(ConfigError, match="batch.max_sise"):
        load_settings(cfg)
    monkeypatch.setenv("STAMPFLOW_BACTH__MAX_SIZE", "3")
    with pytest.raises(ConfigError, match="STAMPFLOW_BACTH__MAX_SIZE"):
        load_settings()


def test_librdkafka_passthrough_and_secrets_masked(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  common:\n    security.protocol: SASL_SSL\n    sasl.mechanism: PLAIN\n"
                   "    sasl.username: alice\n    sasl.password: hunter2\n    ssl.ca.location: /etc/ca.pem\n")
    s = load_settings(cfg)
    assert s.consumer_config()["sasl.password"] == "hunter2"
    assert s.producer_config()["security.protocol"] == "SASL_SSL"
    assert s.consumer_config()["enable.auto.commit"] is False
    masked = json.dumps(s.masked())
    assert "hunter2" not in masked and "alice" in masked
    # The hash ignores secret values: rotating a password does not change result provenance.
    cfg.write_text(cfg.read_text().replace("hunter2", "other"))
    assert load_settings(cfg).config_hash() == s.config_hash()


def test_auto_commit_cannot_be_switched_on(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  consumer:\n    enable.auto.commit: true\n")
    with pytest.raises(ConfigError, match="auto.commit"):
        load_settings(cfg).consumer_config()


def test_exactly_once_sets_transactional_id():
    s = load_settings(kafka={"exactly_once": True, "group_id": "g"})
    assert s.producer_config()["transactional.id"].startswith("g-")


def test_config_show_masks_secrets(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STAMPFLOW_KAFKA__COMMON", '{"sasl.password": "s3cret"}')
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "********" in out
    assert json.loads(out)["config_hash"]


def test_bad_config_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch: {max_size: -4}\n")
    assert main(["--config", str(cfg), "config", "show"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stampflow: invalid configuration: batch.max_size") and "\n" not in err
    assert main(["--config", str(tmp_path / "missing.yaml"), "config", "show"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_non_json_list_in_env_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setenv("STAMPFLOW_KAFKA__INPUT_TOPICS", "a,b")
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "JSON" in err and "Traceback" not in err


def test_private_keys_and_oauth_secrets_are_masked():
    s = load_settings(kafka={"common": {"ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
                                        "sasl.oauthbearer.config": "clientSecret=abc", "ssl.ca.location": "/ca"}})
    common = s.masked()["kafka"]["common"]
    assert common["ssl.key.pem"] == "********" and common["sasl.oauthbearer.config"] == "********"
    assert common["ssl.ca.location"] == "/ca"


def test_metrics_port_in_use_is_one_line(monkeypatch, capsys):
    import socket
    from stream.worker import serve
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = load_settings(metrics={"port": port})
        from stream import worker
        monkeypatch.setattr(worker, "check_broker", lambda *a, **k: None)
        from schemas.errors import StampflowError
        with pytest.raises(StampflowError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            serve(s)


def test_worker_and_replay_share_the_one_broker_check():
    """replay used to reach into the worker for it; both now import it from stream.broker."""
    import inspect

    import stream.broker
    import stream.replay
    import stream.worker

    assert stream.worker.check_broker is stream.broker.check_broker is stream.replay.check_broker
    assert "stream.worker" not in inspect.getsource(stream.replay)


def test_secrets_never_show_in_repr_errors_or_the_hash(monkeypatch):
    secret = "pw-never-shown-4711"
    monkeypatch.setenv("STAMPFLOW_KAFKA__COMMON", json.dumps({"sasl.username": "u", "sasl.password": secret,
                                                              "ssl.key.password": secret}))
    s = load_settings()
    assert s.consumer_config()["sasl.password"] == secret  # librdkafka still gets it
    for text in (repr(s), str(s), repr(s.kafka), json.dumps(s.masked())):
        assert secret not in text and "********" in text
    # A refused setting next to the secret: the one error line names the field, never the values.
    monkeypatch.setenv("STAMPFLOW_KAFKA__COMMON", json.dumps({"sasl.password": secret, "bad": {"nested": 1}}))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert secret not in str(err.value) and "kafka.common" in str(err.value)


def test_consumer_prefetch_is_bounded_and_overridable():
    """A slow sink grows lag, not memory: librdkafka's prefetch queue is capped (16 MB, and 16 MB per fetch)
    unless kafka.consumer says otherwise."""
    conf = load_settings().consumer_config()
    assert conf["queued.max.messages.kbytes"] == 16384 and conf["fetch.max.bytes"] == 16 << 20
    conf = load_settings(kafka={"consumer": {"queued.max.messages.kbytes": 65536}}).consumer_config()
    assert conf["queued.max.messages.kbytes"] == 65536


def test_capped_prefetch_refetches_at_once():
    """A queue capped at about one batch is full after each fetch; librdkafka's default 1,000 ms pause before the
    next fetch then set the pace (314 alerts/s end to end instead of ~1,200), so the pause must stay short."""
    conf = load_settings().consumer_config()
    assert conf["fetch.queue.backoff.ms"] <= 50
    assert load_settings(kafka={"consumer": {"fetch.queue.backoff.ms": 200}}).consumer_config()[
        "fetch.queue.backoff.ms"] == 200
