"""``stampflow`` command line. User errors print one line and exit non-zero; tracebacks are for bugs only.

The one place that knows every floor. ``training`` is imported only inside the commands that need it (train,
evaluate, replay --format, and help text naming the families), so ``serve`` and ``classify`` never import it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from schemas.errors import ConfigError, StampflowError

log = logging.getLogger("stampflow")

EXIT_USER_ERROR = 2


def _settings(args: argparse.Namespace, **overrides: Any):
    from stream.config import load_settings

    settings = load_settings(getattr(args, "config", None), **overrides)
    choose_onednn(settings.models.onednn)
    return settings


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _csv(value: str) -> list[str]:
    return [v for v in (x.strip() for x in value.split(",")) if v]


# -- classify -----------------------------------------------------------------------------------------------------
def cmd_classify(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.dead_letters:
        overrides["output"] = {"dead_letter_dir": args.dead_letters}
    settings = _settings(args, **overrides)
    limit_blas_threads(settings.models.blas_threads)  # the same engine as serve: before anything loads numpy
    from tqdm import tqdm

    from stream.file_source import FileSource
    from stream.sources import IterSource
    from stream.metrics import Metrics
    from stream.worker import build_engine, file_sink, load_classifiers, start_metrics_log

    _setup_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    files = FileSource([Path(p) for p in args.paths])  # bad paths fail here, before models load
    classifiers = load_classifiers(settings, args.models)
    out = Path(args.out)
    fmt = args.format or ("avro" if out.suffix == ".avro" else "jsonl")
    sink = file_sink(settings, out, fmt)
    total = files.count()
    bar = tqdm(total=total, unit="alert", desc="classify", disable=args.quiet or None, file=sys.stderr)
    shown: list[dict[str, Any]] = []

    def on_batch(outcome) -> None:
        bar.update(len(outcome.results) + len(outcome.dead_letters))
        if len(shown) < args.show:
            shown.extend(r.record() for r in outcome.results[: args.show - len(shown)])

    metrics = Metrics()
    metrics_log = None
    if settings.metrics.log_file:  # file runs get the same metrics log as workers, for `stampflow report`
        metrics_log = start_metrics_log(metrics, settings.metrics.log_file, settings.metrics.log_interval_s)
    engine = build_engine(settings, IterSource(files.iter_messages()), sink, classifiers, metrics, on_batch=on_batch)
    try:
        stats = engine.run()
    finally:
        if metrics_log is not None:
            metrics_log.stop()
    bar.close()
    skipped = files.stats.get("skipped", 0)
    if stats.consumed == 0:
        shown_paths = ", ".join(files.skipped_paths[:3])
        raise StampflowError(f"no alerts found in {', '.join(args.paths)}"
                             + (f" ({skipped} files skipped as not alert files, e.g. {shown_paths})" if skipped else ""))
    summary = stats.summary()
    summary["skipped_files"] = skipped
    summary.update({"results_file": str(out), "format": fmt,
                    "dead_letter_dir": str(settings.output.dead_letter_dir) if stats.dead_letters else None,
                    "models": [f"{c.name}@{c.version}" for c in classifiers]})
    if args.show:
        print(format_table(shown))
    print(json.dumps(summary, indent=2))
    return 0


def format_table(results: list[dict[str, Any]]) -> str:
    rows = [("objectId", "candid", "model", "label", "probability", "uncertainty")]
    for r in results:
        preds = r["predictions"] or [None]
        for p in preds:
            if p is None:
                rows.append((r["objectId"], str(r["candid"]), "-", "unrouted", "-", "-"))
            else:
                prob = p["probabilities"].get(p["label"], float("nan"))
                rows.append((r["objectId"], str(r["candid"]), p["model"], p["label"], f"{prob:.3f}",
                             f"{p['uncertainty']:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- serve / replay ------------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    limit_blas_threads(settings.models.blas_threads)
    from stream.worker import serve  # imports numpy: after the BLAS limit, which OpenBLAS reads once at load

    _setup_logging(settings.log_level)
    summary = serve(settings)
    print(json.dumps(summary))
    return 0


def limit_blas_threads(n: int) -> bool:
    """OPENBLAS_NUM_THREADS for this process (0: leave it); True when it was set. OpenBLAS reads it once, when
    numpy loads it: a caller that already imported numpy (``main`` called in process, as the tests and the viewer
    do) keeps its threads, and a warning says so."""
    if n <= 0:
        return False
    if "numpy" in sys.modules:
        logging.getLogger(__name__).warning("numpy is already loaded: models.blas_threads=%d not applied in this "
                                            "process", n)
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = str(n)
    return True


def choose_onednn(on: bool | None) -> bool:
    """TF_ENABLE_ONEDNN_OPTS for this process from ``models.onednn`` (None: leave the environment's choice); True
    when it was set. TensorFlow reads it once, at import: a caller that already imported it keeps its kernels, and
    a warning says so when that differs from the setting."""
    if on is None:
        return False
    value = "1" if on else "0"
    if "tensorflow" in sys.modules:
        if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != value:
            log.warning("TensorFlow is already loaded: models.onednn=%s not applied in this process", on)
        return False
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = value
    return True


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _setup_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    paths = [Path(p) for p in args.paths]
    rate = None if args.max_speed else args.rate
    from stream.replay import VisitCadence

    visit = VisitCadence.of(args.visit_size, args.visit_interval, rate)
    if visit is not None and args.out:
        raise StampflowError("--visit-size/--visit-interval pace a replay into Kafka (--topic), not --out")
    if args.format is None:
        if args.out:
            raise StampflowError("--out writes archival cutout packets; it needs --format (alert files are "
                                 "already stream messages: classify or replay them as they are)")
        if not args.topic:
            raise StampflowError("replay needs --topic")
        from stream.replay import replay

        stats = replay(settings, paths, args.topic, rate=rate, repeat=args.repeat, progress=not args.quiet,
                       visit=visit)
        print(json.dumps(stats))
        return 0
    if bool(args.topic) == bool(args.out):
        raise StampflowError("replay --format needs exactly one of --topic (Kafka) or --out (an .avro file)")
    stats = replay_archive(settings, args, paths, rate, visit)
    print(json.dumps(stats))
    return 0


def replay_archive(settings, args: argparse.Namespace, paths: list[Path], rate: float | None,
                   visit=None) -> dict[str, Any]:
    """Archival cutout sets -> cutout packets on a topic or in a file (each family declares its formats)."""
    from tqdm import tqdm

    from schemas.cutout_packet import encode_cutout, write_cutout_file
    from training.families import iter_archive

    options = _options(args.set)
    limit = args.limit
    counts: dict[str, int] = {"cutouts": 0, "with_truth": 0}

    def cutouts():
        for _ in range(args.repeat):
            for c in iter_archive(args.format, paths, options, limit=limit):
                counts["cutouts"] += 1
                counts["with_truth"] += c.has_truth()
                yield c

    if args.out:
        out = Path(args.out)
        bar = tqdm(unit="cutout", desc=f"{args.format} → {out}", disable=args.quiet or None, file=sys.stderr)

        def counted():
            for c in cutouts():
                bar.update(1)
                yield c

        n = write_cutout_file(out, counted())
        bar.close()
        return {"format": args.format, "out": str(out), "packets": n, "with_truth": counts["with_truth"]}
    from stream.replay import replay_messages

    stats = replay_messages(settings, ((c.id.encode(), encode_cutout(c), f"{args.format}:{c.id}") for c in cutouts()),
                            args.topic, total=None, rate=rate, progress=not args.quiet, visit=visit)
    return {"format": args.format, **stats, "with_truth": counts["with_truth"]}


def _options(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise StampflowError(f"--set {pair!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


# -- models / train / evaluate ----------------------------------------------------------------------------------------
def cmd_models_list(args: argparse.Namespace) -> int:
    from models.registry import Registry

    settings = _settings(args)
    infos = Registry(settings.models.artifact_dirs).list()
    if args.json:
        print(json.dumps([{"name": i.name, "version": i.version, "family": i.family, "path": str(i.path),
                           "trained_on": i.metadata.get("trained_on"), "created": i.metadata.get("created"),
                           "metrics": i.metadata.get("metrics")} for i in infos], indent=2, default=str))
        return 0
    rows = [("name", "version", "family", "trained_on", "created", "path")]
    rows += [(i.name, i.version, i.family, str(i.metadata.get("trained_on", "?")), str(i.metadata.get("created", "?")),
              str(i.path)) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
    return 0


# TrainOptions field -> the flag that sets it, for one-line errors in the user's words
_TRAIN_FLAGS = {"data": "--data", "epochs": "--epochs", "batch_size": "--batch-size", "seed": "--seed",
                "from_model": "--from", "freeze": "--freeze", "out_root": "--out", "version": "--version",
                "mixed_precision": "--mixed-precision", "learning_rate": "--learning-rate"}


def cmd_train(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from training.families import train
    from training.family import TrainOptions

    _setup_logging("INFO")
    flags = {field: getattr(args, field) for field in ("data", "epochs", "batch_size", "seed", "from_model", "freeze",
                                                       "version", "mixed_precision", "learning_rate")}
    flags["out_root"] = args.out
    try:
        opts = TrainOptions(**flags)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else "?"
        raise StampflowError(f"{_TRAIN_FLAGS.get(field, field)} {flags.get(field)}: {err['msg']}") from None
    result = train(args.family, opts, _options(args.set))
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.families import evaluate

    settings = _settings(args)
    _setup_logging("WARNING")
    result = evaluate(args.model, Path(args.data) if args.data else None, _options(args.set),
                      roots=settings.models.artifact_dirs, alerts=[Path(p) for p in args.alerts or []])
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from training.uncertainty_bundled import release

    _setup_logging("INFO")
    for name in args.names:
        print(json.dumps(release(name, args.version, source_version=args.source, n=args.n,
                                 out_root=Path(args.out) if args.out else None), indent=2, default=str))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from stream.top import run_top

    return run_top(args)


def cmd_report(args: argparse.Namespace) -> int:
    from stream.report import run_report

    return run_report(args)


def cmd_view(args: argparse.Namespace) -> int:
    from stream.view.app import run

    settings = _settings(args)
    _setup_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    return run(args, settings)


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(json.dumps({"config_hash": settings.config_hash(), "settings": settings.masked()}, indent=2))
    return 0


# -- parser ------------------------------------------------------------------------------------------------------------
class _RegistryHelp(argparse.HelpFormatter):
    """Fills ``{families}`` and ``{formats}`` in help texts from the family registry when help is printed, so the
    lists follow the registry and building the parser (every command, ``serve`` included) imports no training."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text and ("{families}" in text or "{formats}" in text):
            from training.families import FAMILIES, archive_formats

            names = [f.name for f in FAMILIES]
            text = text.replace("{families}", ", ".join(names[:-1]) + " or " + names[-1])
            text = text.replace("{formats}", ", ".join(archive_formats()))
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stampflow", description="Streaming classifier for astronomical alert cutouts.")
    p.add_argument("--config", help="YAML config file (env STAMPFLOW_* overrides it)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("classify", help="classify alert files (no broker): files in, results out")
    c.add_argument("paths", nargs="+", help=".avro, .avro.gz, directories, nightly .tar.gz, Fink .parquet")
    c.add_argument("--out", default="results.jsonl", help="results file (.jsonl or .avro)")
    c.add_argument("--format", choices=["jsonl", "avro"], help="override the format implied by --out")
    c.add_argument("--models", type=_csv, help="comma-separated model names (default: config models.names)")
    c.add_argument("--dead-letters", help="directory for dead letters (default: config output.dead_letter_dir)")
    c.add_argument("--show", type=int, default=10, help="print a table of the first N results (0: none)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_classify)

    s = sub.add_parser("serve", help="run the Kafka worker")
    s.set_defaults(func=cmd_serve)

    r = sub.add_parser("replay", help="produce archival alerts, or archival cutout sets as packets, into Kafka "
                                      "(or cutout packets into a file)", formatter_class=_RegistryHelp)
    r.add_argument("paths", nargs="+")
    r.add_argument("--topic", help="Kafka topic to produce to")
    r.add_argument("--format", help="archival cutout format: {formats} (default: alert files)")
    r.add_argument("--out", help="with --format: write the cutout packets to this .avro file instead of Kafka")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="reader option, repeatable")
    r.add_argument("--limit", type=int, help="with --format: at most this many cutouts per repeat")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--rate", type=float, default=None, help="messages per second")
    g.add_argument("--max-speed", action="store_true", help="as fast as the broker takes them (default)")
    r.add_argument("--repeat", type=int, default=1, help="replay the inputs this many times (load tests)")
    r.add_argument("--visit-size", type=int, metavar="N",
                   help="visit cadence, with --visit-interval: N messages as one burst (Rubin: 10,000, peak 40,000)")
    r.add_argument("--visit-interval", type=float, metavar="S",
                   help="visit cadence: seconds from one burst's start to the next (Rubin: about 34)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_replay)

    m = sub.add_parser("models", help="model registry")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="list artifacts")
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(func=cmd_models_list)

    t = sub.add_parser("train", help="train a model family; writes a versioned artifact with plots",
                       formatter_class=_RegistryHelp)
    t.add_argument("family", help="{families}")
    t.add_argument("--data", required=True, help="the family's archival data (file or directory)")
    t.add_argument("--epochs", type=int, help="training epochs (default: the family's)")
    t.add_argument("--batch-size", type=int, help="training batch size (default: the family's)")
    t.add_argument("--from", dest="from_model", metavar="MODEL",
                   help="transfer learning: start from this model (name, name@version or artifact directory)")
    t.add_argument("--freeze", type=int, help="with --from: freeze the first N layers that have weights")
    t.add_argument("--learning-rate", type=float, help="optimiser learning rate (default: the family's)")
    t.add_argument("--mixed-precision", action="store_true", help="float16 compute on a GPU (ignored on CPU)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="family option, repeatable")
    t.add_argument("--out", help="registry root to write the artifact to (default: bundled artifacts)")
    t.add_argument("--version", help="artifact version (default: next)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a model on labelled data; prints JSON")
    e.add_argument("model", help="model name, name@version, or artifact directory")
    eg = e.add_mutually_exclusive_group(required=True)
    eg.add_argument("--data", help="the family's labelled data set")
    eg.add_argument("--alerts", nargs="+", metavar="PATH",
                    help="real alert files/directories, scored against the reference each packet carries "
                         "(stargal: PS1 sgscore1 within 1\"), through the worker's own path")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="family option, e.g. split=valid")
    e.set_defaults(func=cmd_evaluate)
    ca = sub.add_parser("calibrate", help="new version of a bundled mock-trained CNN with calibration and an "
                                          "out-of-distribution rule (same weights); prints JSON")
    ca.add_argument("names", nargs="+", help="deepmerge, deepmerge-noisy, morphology-candels, morphology-clash, spin")
    ca.add_argument("--version", required=True, help="the new version, e.g. 1.2.0")
    ca.add_argument("--source", default="1.0.0", help="the released version to derive from")
    ca.add_argument("--n", type=int, help="images regenerated per model (split into thirds)")
    ca.add_argument("--out", help="registry root to write to (default: bundled artifacts)")
    ca.set_defaults(func=cmd_calibrate)

    tp = sub.add_parser("top", help="live terminal view of a worker's metrics (or of Prometheus)")
    tg = tp.add_mutually_exclusive_group()
    tg.add_argument("--url", default="http://127.0.0.1:9108/metrics", help="a worker's /metrics URL")
    tg.add_argument("--prometheus", help="a Prometheus base URL (aggregates every worker it scrapes)")
    tp.add_argument("--job", default="stampflow", help="Prometheus job label of the workers")
    tp.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    tp.add_argument("--once", action="store_true", help="print one frame (two scrapes, for rates) and exit")
    tp.set_defaults(func=cmd_top)

    rp = sub.add_parser("report", help="PNG plots of throughput and latency over a run")
    rg = rp.add_mutually_exclusive_group(required=True)
    rg.add_argument("--prometheus", help="Prometheus base URL to query over [--start, --end]")
    rg.add_argument("--metrics-log", help="the worker's metrics log (config metrics.log_file)")
    rp.add_argument("--start", help="start time: unix seconds or ISO 8601 (default: 1 hour before --end)")
    rp.add_argument("--end", help="end time: unix seconds or ISO 8601 (default: now)")
    rp.add_argument("--step", type=float, default=5.0, help="Prometheus query step, seconds")
    rp.add_argument("--job", default="stampflow", help="Prometheus job label of the workers")
    rp.add_argument("--out", default="report", help="directory for the PNGs and a summary JSON")
    rp.set_defaults(func=cmd_report)

    from stream.view import DEFAULT_PORT  # a constant: the package's __init__ imports nothing

    v = sub.add_parser("view", help="a local web page of the stamps next to every model's labels (results file + "
                                    "its inputs, or Kafka topics)")
    v.add_argument("results", nargs="?", help="results file (.jsonl or .avro) written by classify")
    v.add_argument("--inputs", nargs="+", metavar="PATH", help="the alert files, directories or archives the "
                                                                "results were made from (their stamps are shown)")
    v.add_argument("--dead-letters", help="the dead-letter directory classify wrote (dead letters tab)")
    v.add_argument("--kafka", action="store_true", help="read a result topic and its input topic instead of files")
    v.add_argument("--results-topic", help="with --kafka: result topic (default: config kafka.result_topic)")
    v.add_argument("--input-topic", action="append", help="with --kafka: input topic, repeatable (default: config "
                                                          "kafka.input_topics)")
    v.add_argument("--dead-letter-topic", help="with --kafka: default config kafka.dead_letter_topic")
    v.add_argument("--no-dead-letters", action="store_true", help="with --kafka: do not read a dead-letter topic")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free port)")
    v.add_argument("--table", action="store_true", help="print one table per model and how to serve it; no server")
    v.set_defaults(func=cmd_view)

    cf = sub.add_parser("config", help="configuration")
    csub = cf.add_subparsers(dest="config_command", required=True)
    cs = csub.add_parser("show", help="print the effective config, secrets masked")
    cs.set_defaults(func=cmd_config_show)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"stampflow: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except StampflowError as exc:
        print(f"stampflow: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"stampflow: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KafkaException as exc:
        print(f"stampflow: Kafka error: {exc.args[0].str() if exc.args else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stampflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
