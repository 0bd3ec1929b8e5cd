"""``stampflow view``: load what to show, then print the per-model tables or serve the page."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from schemas.errors import StampflowError
from stream.view import DEFAULT_PORT
from stream.view.inputs import ViewData, load_files
from stream.view.server import Viewer, make_server

MOCK_NOTE = "mock-trained: trained on mock images; its labels say nothing about real data"


def models_meta(artifact_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """name -> what the registry says about how it was trained (``mock``: metadata ``trained_on: mock``)."""
    from models.registry import Registry

    out: dict[str, dict[str, Any]] = {}
    for info in Registry(artifact_dirs).list():  # sorted by version: the latest wins
        trained_on = str(info.metadata.get("trained_on", "unknown"))
        out[info.name] = {"family": info.family, "trained_on": trained_on, "mock": trained_on == "mock"}
    return out


def load(args, settings, decoder) -> ViewData:
    if args.kafka:
        from stream.view.kafka_inputs import load_kafka

        k = settings.kafka
        inputs = args.input_topic or list(k.input_topics)
        if not inputs:
            raise StampflowError("view --kafka needs --input-topic (or kafka.input_topics in the config)")
        conf = {"bootstrap.servers": k.bootstrap_servers, **k.common}
        dead = None if args.no_dead_letters else (args.dead_letter_topic or k.dead_letter_topic)
        return load_kafka(conf, args.results_topic or k.result_topic, inputs, dead, decoder)
    if not args.results:
        raise StampflowError("view needs a results file (or --kafka)")
    if not args.inputs:
        raise StampflowError("view needs --inputs: the alert files or archives the results were made from")
    results = Path(args.results)
    if not results.is_file():
        raise StampflowError(f"no such results file: {results}")
    dead = Path(args.dead_letters) if args.dead_letters else None
    return load_files(results, [Path(p) for p in args.inputs], dead, decoder)


def format_tables(data: ViewData, models: dict[str, dict[str, Any]]) -> str:
    """One table per model (objectId, label, probability, uncertainty, OOD, truth); mock-trained ones say so."""
    per_model: dict[str, list[tuple[str, ...]]] = {}
    versions: dict[str, str] = {}
    for raw in data.results:
        rec = json.loads(raw)
        truth_rec = rec.get("truth") or {}
        truth = truth_rec.get("label") or ", ".join(f"{k}={v:.4g}" for k, v in (truth_rec.get("values") or {}).items())
        for p in rec["predictions"]:
            prob = (p.get("probabilities") or {}).get(p["label"])
            unc = p.get("uncertainty")
            mark = {True: "yes", False: "no", None: ""}[p.get("correct")]
            per_model.setdefault(p["model"], []).append(
                (rec["objectId"], p["label"], "-" if prob is None else f"{prob:.3f}",
                 "-" if unc is None else f"{unc:.4f}", "OOD" if p.get("out_of_distribution") else "", truth, mark))
            versions[p["model"]] = p.get("model_version", "?")
    out = []
    for model in sorted(per_model):
        mock = models.get(model, {}).get("mock")
        head = f"{model}@{versions[model]}" + (f"  [{MOCK_NOTE}]" if mock else "")
        rows = [("objectId", "label", "probability", "uncertainty", "flag", "truth", "correct")] + per_model[model]
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out.append(head + "\n" + "\n".join(lines))
    unrouted = sum(1 for raw in data.results if not json.loads(raw)["predictions"])
    if unrouted:
        out.append(f"{unrouted} results unrouted (no model accepted the packet)")
    return "\n\n".join(out)


def open_command(args) -> str:
    """The command line that serves what --table just printed (its own arguments, without --table)."""
    if args.kafka:
        words = ["--kafka"] + [w for flag, value in (("--results-topic", args.results_topic),
                                                      ("--dead-letter-topic", args.dead_letter_topic))
                               if value for w in (flag, value)]
        for topic in args.input_topic or []:
            words += ["--input-topic", topic]
    else:
        words = [args.results, "--inputs", *args.inputs]
        if args.dead_letters:
            words += ["--dead-letters", args.dead_letters]
    if args.host != "127.0.0.1":
        words += ["--host", args.host]
    if args.port != DEFAULT_PORT:
        words += ["--port", str(args.port)]
    # as it was started (make demo runs .venv/bin/stampflow), so the line can be pasted as it is
    prog = sys.argv[0] if Path(sys.argv[0]).name == "stampflow" else "stampflow"
    return f"{prog} view " + " ".join(shlex.quote(str(w)) for w in words)


def run(args, settings) -> int:
    from stream.worker import build_decoder

    decoder = build_decoder(settings)
    data = load(args, settings, decoder)
    models = models_meta(settings.models.artifact_dirs)
    try:
        if args.table:
            print(format_tables(data, models))
            print(f"\nSee the stamps next to these labels: {open_command(args)}  (then open "
                  f"http://{args.host}:{args.port}/)")
            return 0
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"stampflow view: warning: bound to {args.host}: anyone who can reach it can read these results "
                  f"and download the dead letters' bytes (there is no login)", file=sys.stderr)
        server = make_server(Viewer(data, decoder, models), args.host, args.port)
        host, port = server.server_address[:2]
        print(f"stampflow view: {data.described}", flush=True)
        print(f"stampflow view: serving on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stampflow view: stopped", file=sys.stderr)
        finally:
            server.server_close()
        return 0
    finally:
        data.close()
