"""The one typed configuration object.

Sources, highest precedence first: explicit overrides (CLI flags) > environment (``STAMPFLOW_``, nested with
``__``, e.g. ``STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS``) > an optional YAML file > defaults. Unknown keys are errors
(``extra="forbid"``) because a misspelt setting that silently does nothing is worse than a refusal to start.
librdkafka settings pass through untouched in ``kafka.common`` / ``kafka.consumer`` / ``kafka.producer``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError,
                               YamlConfigSettingsSource)

from schemas.errors import ConfigError

LibrdkafkaValue = str | int | float | bool
# The YAML file for the settings being built; module-level because pydantic treats underscored class
# attributes as private model attributes.
_yaml_file: Optional[Path] = None
SECRET_KEY = re.compile(r"(password|secret|user\.info|token|credential|sasl\.jaas|\.pem$|oauthbearer\.config)",
                        re.IGNORECASE)
MASK = "********"
# Consumer prefetch bound (librdkafka queued.max.messages.kbytes), see consumer_config.
PREFETCH_KBYTES = 16384
#: librdkafka's pause before fetching again once the capped prefetch queue was full (see consumer_config).
FETCH_QUEUE_BACKOFF_MS = 10


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port].")
    group_id: str = Field("stampflow", description="Consumer group; replicas in one group share the partitions.")
    input_topics: list[str] = Field(["ztf-alerts"], description="Topics to consume alerts or cutout packets from.")
    result_topic: str = Field("stampflow-results", description="Topic the labelled results are published to.")
    dead_letter_topic: str = Field("stampflow-dead-letters",
                                   description="Topic for packets that failed, with original bytes and the error.")
    auto_offset_reset: Literal["earliest", "latest", "error"] = Field(
        "earliest", description="Where a group with no committed offset starts (librdkafka auto.offset.reset).")
    start_timestamp_ms: Optional[int] = Field(
        None, description="If set, seek every assigned partition to the first offset at or after this time "
                          "(unix ms, via offsets_for_times) instead of the committed offset: replays from a time.")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4", description="Compression of produced results (librdkafka compression.type).")
    exactly_once: bool = Field(False, description="Use Kafka transactions: results and consumed offsets commit "
                                                  "atomically (send_offsets_to_transaction). Default is at-least-once.")
    transactional_id: Optional[str] = Field(
        None, description="transactional.id for exactly-once mode; must be stable per worker replica. "
                          "Defaults to '<group_id>-<hostname>'.")
    delivery_timeout_s: float = Field(60.0, gt=0, description="How long to wait for the broker to acknowledge a "
                                                              "batch of results before giving up without committing.")
    lag_interval_s: float = Field(5.0, gt=0, description="How often consumer lag per partition is refreshed.")
    common: dict[str, LibrdkafkaValue] = Field(
        default_factory=dict, description="librdkafka settings for consumer and producer alike (SASL, TLS, ...).")
    consumer: dict[str, LibrdkafkaValue] = Field(default_factory=dict,
                                                 description="Extra librdkafka consumer settings, passed through.")
    producer: dict[str, LibrdkafkaValue] = Field(default_factory=dict,
                                                 description="Extra librdkafka producer settings, passed through.")

    def __repr_args__(self):
        # repr()/str() of the settings (a debugger, a log line, a traceback's locals) never shows a secret: the
        # librdkafka maps are masked by key, as in `config show`.
        for name, value in super().__repr_args__():
            yield name, _mask(value) if name in ("common", "consumer", "producer") else value


class BatchSettings(_Section):
    max_size: int = Field(256, ge=1, le=65536, description="A batch closes when it holds this many messages ...")
    max_wait_ms: int = Field(100, ge=0, description="... or when this long has passed since its first message.")


class ErrorSettings(_Section):
    max_consecutive_failures: int = Field(
        1000, ge=1, description="Stop the worker, with a clear message, after this many packets in a row failed "
                                "(each is dead-lettered first). Any success resets the count.")


class MetricsSettings(_Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics on http://host:port/metrics.")
    host: str = Field("127.0.0.1", description="Address the metrics server binds (0.0.0.0 in containers).")
    port: int = Field(9108, ge=0, le=65535, description="Metrics port; 0 picks a free one (logged at start).")
    live_timeout_s: float = Field(60.0, gt=0, description="Health: /livez fails when the poll loop has not turned "
                                  "for this long (a stuck model call or a wedged consumer).")
    log_file: Optional[Path] = Field(None, description="Append a JSON snapshot of the worker's metrics to this file "
                                     "every log_interval_s (input for `stampflow report` without Prometheus).")
    log_interval_s: float = Field(5.0, gt=0, description="Seconds between snapshots in metrics.log_file.")
    accuracy_window: int = Field(500, ge=1, description="Truth-labelled results per model in the running "
                                 "accuracy/RMSE gauges.")


class SchemaSettings(_Section):
    framing: Literal["auto", "ztf", "confluent"] = Field(
        "auto", description="Message framing: ZTF (Avro container per message), Confluent wire (magic byte + "
                            "schema id, Rubin), or auto-detect per message.")
    registry_url: Optional[str] = Field(None, description="Schema registry URL (Confluent API, e.g. Apicurio's "
                                                          "http://host:port/apis/ccompat/v7) for Confluent-framed "
                                                          "messages; without one, Rubin's ids (major*100+minor) "
                                                          "resolve from lsst-alert-packet.")
    schema_dir: Optional[Path] = Field(None, description="Local directory of <schema id>.avsc files, used before "
                                                         "the registry (or, without one, before Rubin's package "
                                                         "schemas).")


class ModelSettings(_Section):
    names: list[str] = Field(["stargal"], description="Models to serve: name or name@version from the registry.")
    artifact_dirs: list[Path] = Field(default_factory=list,
                                      description="Extra registry roots searched before the bundled artifacts.")
    # One: a worker's numpy calls are small (one batch), and OpenBLAS's extra threads spin while they wait; with
    # its default (every core) a star/galaxy worker burnt 1,040-1,060 us of CPU per alert, with one 654-670.
    blas_threads: int = Field(1, ge=0, description="OpenBLAS threads per `serve` or `classify` process "
                                                    "(OPENBLAS_NUM_THREADS); 0 keeps OpenBLAS's own default.")
    # TensorFlow enables oneDNN only on CPUs with AVX-512 VNNI/BF16 or AMX; on AVX2 its Eigen fallback ran
    # radio-first's network ~2.2x slower (docs/models.md, "CPU kernels"). None leaves the choice to the
    # environment (TF_ENABLE_ONEDNN_OPTS, which stampflow defaults to on).
    onednn: Optional[bool] = Field(None, description="TensorFlow's oneDNN CPU kernels (TF_ENABLE_ONEDNN_OPTS) for "
                                                      "every command that reads these settings (`stampflow train` "
                                                      "takes the environment's); None: the environment's choice, "
                                                      "on unless it says 0.")


class OutputSettings(_Section):
    format: Literal["avro", "jsonl"] = Field("jsonl", description="File sink format for classify: Avro container "
                                                                  "or JSON lines.")
    dead_letter_dir: Path = Field(Path("dead-letters"), description="Where file mode writes dead letters "
                                                                     "(original bytes + JSON sidecar).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAMPFLOW_", env_nested_delimiter="__", extra="forbid",
                                      validate_default=True)

    data: Path = Field(Path("../shared/data"), description="Root of the archival/real data used by training, "
                                                             "tests and bench (STAMPFLOW_DATA).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka source and sink.")
    batch: BatchSettings = Field(default_factory=BatchSettings, description="Micro-batching.")
    errors: ErrorSettings = Field(default_factory=ErrorSettings, description="Error budget.")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Prometheus endpoint.")
    schemas: SchemaSettings = Field(default_factory=SchemaSettings, description="Alert framing and schemas.")
    models: ModelSettings = Field(default_factory=ModelSettings, description="Which models to serve.")
    output: OutputSettings = Field(default_factory=OutputSettings, description="File-mode outputs.")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        sources = [init_settings, env_settings]
        if _yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=_yaml_file))
        return tuple(sources)

    # -- views -------------------------------------------------------------------------------------------------
    def masked(self) -> dict[str, Any]:
        return _mask(self.model_dump(mode="json"))

    def config_hash(self) -> str:
        """Stable hash of the effective config minus secrets, stamped on every result."""
        payload = json.dumps(self.masked(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def consumer_config(self) -> dict[str, LibrdkafkaValue]:
        k = self.kafka
        conf: dict[str, LibrdkafkaValue] = {
            "bootstrap.servers": k.bootstrap_servers,
            "group.id": k.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": k.auto_offset_reset,
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
            # Alerts are ~60-70 kB: the 1 MB default per-partition fetch starves a batch of 256.
            "max.partition.fetch.bytes": 16 << 20,
            # The prefetch queue is the worker's only buffer that grows with the input: capped at about one
            # batch of alerts (16 MB; librdkafka may hold up to 3x that: the queue, a partly consumed fetch response
            # and one in flight), so a slow or stalled sink grows
            # consumer lag, not memory (librdkafka's default is 64 MB queued plus 64 MB fetches).
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
            "fetch.max.bytes": PREFETCH_KBYTES << 10,
            # With the queue capped at about one batch it is full after every fetch, and librdkafka then waits
            # fetch.queue.backoff.ms (default 1,000 ms) before fetching again: measured 314 alerts/s end to end
            # against 1,092-1,276 with 10 ms (same backlog, alternating runs; BENCHMARKS.md, 2026-11-29 12:50).
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        }
        conf.update(k.common)
        conf.update(k.consumer)
        if conf.get("enable.auto.commit") not in (False, "false", "False"):
            raise ConfigError("kafka.consumer.enable.auto.commit must stay false: offsets are committed only after "
                              "results are acknowledged")
        return conf

    def producer_config(self) -> dict[str, LibrdkafkaValue]:
        k = self.kafka
        conf: dict[str, LibrdkafkaValue] = {
            "bootstrap.servers": k.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": k.compression,
            "linger.ms": 5,
            "delivery.timeout.ms": int(k.delivery_timeout_s * 1000),
        }
        if k.exactly_once:
            # Offsets travel with the consumer group's metadata (KIP-447), so the id need not be stable across
            # restarts; it must only be unique per live worker, or two replicas fence each other.
            conf["transactional.id"] = k.transactional_id or f"{k.group_id}-{os.uname().nodename}-{os.getpid()}"
        conf.update(k.common)
        conf.update(k.producer)
        return conf


def _mask(obj: Any, key: str = "") -> Any:
    if isinstance(obj, dict):
        return {k: _mask(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mask(v, key) for v in obj]
    if key and SECRET_KEY.search(key) and obj not in (None, ""):
        return MASK
    if isinstance(obj, str) and "://" in obj and "@" in obj:  # credentials embedded in a URL
        return re.sub(r"://[^@/]*@", f"://{MASK}@", obj)
    return obj


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        parts.append(f"{loc}: {e['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; every failure becomes one ConfigError line."""
    config_file = config_file or os.environ.get("STAMPFLOW_CONFIG_FILE")
    yaml_path: Path | None = None
    if config_file:
        yaml_path = Path(config_file)
        if not yaml_path.is_file():
            raise ConfigError(f"config file not found: {yaml_path}")
        import yaml  # local import: only needed with a file

        try:
            loaded = yaml.safe_load(yaml_path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {yaml_path} is not valid YAML: {exc}".splitlines()[0]) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {yaml_path} must hold a mapping at top level")
    unknown = sorted(name for name in os.environ if name.startswith("STAMPFLOW_") and name != "STAMPFLOW_CONFIG_FILE"
                     and name[len("STAMPFLOW_"):].split("__")[0].lower() not in Settings.model_fields)
    if unknown:
        raise ConfigError(f"unknown setting in the environment: {', '.join(unknown)} "
                          f"(known: {', '.join('STAMPFLOW_' + f.upper() for f in Settings.model_fields)})")
    # The env var naming the YAML file shares the prefix but is not a setting itself.
    hidden = os.environ.pop("STAMPFLOW_CONFIG_FILE", None)
    global _yaml_file
    _yaml_file = yaml_path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except SettingsError as exc:  # e.g. a list/dict env var that is not valid JSON
        cause = exc.__cause__ or exc
        raise ConfigError(f"invalid configuration: {exc} ({cause.__class__.__name__}: {cause})".splitlines()[0]
                          + "; list and mapping values in the environment are JSON, e.g. "
                          "STAMPFLOW_KAFKA__INPUT_TOPICS='[\"a\", \"b\"]'") from None
    finally:
        _yaml_file = None
        if hidden is not None:
            os.environ["STAMPFLOW_CONFIG_FILE"] = hidden


def data_root() -> Path:
    """The data root (``STAMPFLOW_DATA``, default ``../shared/data``), resolved: the one place that reads it.

    Training readers, tests and benchmarks all ask here, so one setting moves every real-data path at once.
    """
    return Path(load_settings().data).resolve()
