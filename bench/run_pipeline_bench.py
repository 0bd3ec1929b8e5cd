"""Pipeline benchmark: real alerts through a real broker and the real worker. Reports; never asserts.

Runs, in one go, on whatever machine it is started on:
  1. decode-only rate (in-process, one core): header + projected Avro, stamps left compressed; and with the
     science stamp decoded (what the star/galaxy model needs);
  2. a naive loop for comparison: fastavro.reader + astropy fits.open per stamp + one model call per alert;
  3. a peer: a real broker package's ZTF alert loading as its users run it (`bench/peer_ampel.py`: AMPEL's
     `ampel-ztf` alert supplier, in its own venv under .cache/peer);
  4. end-to-end throughput: the shared real ZTF alerts replicated to >= N messages in a topic, then ``--workers``
     `stampflow serve` processes in one consumer group drain the backlog; alerts/s = messages / (last ack - first
     consume); with the ratios to the naive loop and to the peer;
  5. end-to-end latency under a paced load (default 40% of the measured throughput): result log-append time
     minus input log-append time, per message, p50/p99;
  6. the worker's peak RSS (VmHWM) at the end;
  7. Rubin visits (`bench/visit_bench.py`): a 40,000-alert burst then 10,000 every 34 s, three times; per visit the
     time from its first message by which 98% and 100% of its alerts have a result. ``--only-visits`` runs it
     alone, ``--no-visits`` leaves it out.
Writes bench/results/pipeline-<utc>.json (visits-<utc>.json with --only-visits) and adds rows to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

# the decode columns come from the decode benchmark, so both scripts measure them the same way
from bench.decode_throughput import bench_decode, load_alert_bytes  # noqa: E402
from bench.pipeline_workers import Workers, start_broker, stop_broker  # noqa: E402
from bench.visit_bench import add_arguments as add_visit_arguments, run_visits  # noqa: E402


def bench_naive(msgs: list[bytes], count: int = 1500, model: str = "stargal") -> dict:
    """What a straightforward broker plug-in does: full fastavro read, astropy per stamp, model per alert."""
    import fastavro
    import warnings

    from astropy.io import fits
    from astropy.io.fits.verify import VerifyWarning

    warnings.simplefilter("ignore", VerifyWarning)

    from models.preprocess import centre_crop, fill_nan
    from models.registry import Registry
    from stream.decode.mappers import CUTOUT_FIELDS

    clf = Registry().load(model)
    t0 = time.perf_counter()
    n = 0
    for m in (msgs * (count // len(msgs) + 1))[:count]:
        rec = next(iter(fastavro.reader(io.BytesIO(m))))
        stamps = {}
        for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            cutout = rec.get(key)
            if not cutout or not cutout.get("stampData"):
                continue
            raw = gzip.decompress(cutout["stampData"])
            with fits.open(io.BytesIO(raw)) as hdul:
                stamps[key] = hdul[0].data.astype(np.float32)
        spec = clf.input_spec  # the stamp kind and crop the served model declares (2.0.0: template, 19x19)
        key = CUTOUT_FIELDS[spec.stamp_kinds[0]]
        if key in stamps:  # a packet without that stamp is unrouted, as in the worker
            clf.predict_batch(fill_nan(centre_crop(stamps[key], spec.size))[None, :, :, None])
        n += 1
    return {"naive_loop_alerts_per_s": round(n / (time.perf_counter() - t0), 1), "naive_loop_alerts": n}


def produce(bootstrap: str, topic: str, msgs: list[bytes], total: int, rate: float | None = None) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all", "enable.idempotence": True,
                  "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20})
    t0 = time.monotonic()
    for i in range(total):
        while True:
            try:
                p.produce(topic, msgs[i % len(msgs)])
                break
            except BufferError:
                p.poll(0.05)
        if rate is not None:
            ahead = (i + 1) / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(120) == 0


def run_worker(bootstrap: str, topic: str, results: str, expect: int, batch: int, timeout: float,
               model: str = "stargal", workers: int = 1, extra_env: dict | None = None) -> dict:
    """``workers`` `stampflow serve` processes in one consumer group drain ``expect`` messages."""
    with Workers(bootstrap, topic, results, group=f"bench-{topic}", n=workers, batch=batch, model=model,
                 extra_env=extra_env) as w:
        w.wait_up()
        return w.drain(expect, timeout)


def latencies(bootstrap: str, input_topic: str, result_topic: str) -> np.ndarray:
    """Per message: log-append time of its result minus log-append time of the input message."""
    def read(topic):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
        c.subscribe([topic])
        out, idle = [], time.time()
        while time.time() - idle < 3:
            ms = c.consume(1000, 0.5)
            if ms:
                idle = time.time()
            out.extend(m for m in ms if m.error() is None)
        c.close()
        return out

    from schemas.results import decode_schemaless

    produced = {(m.partition(), m.offset()): m.timestamp()[1] for m in read(input_topic)}
    lat = []
    for m in read(result_topic):
        r = decode_schemaless(m.value())
        key = (r["source"]["partition"], r["source"]["offset"])
        if key in produced:
            lat.append((produced[key] / 1000.0, (m.timestamp()[1] - produced[key]) / 1000.0))
    return np.asarray(sorted(lat)).reshape(-1, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--model", default="stargal", help="model the worker serves (name or name@version)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes in one consumer group for the end-to-end drain (one per core: 2)")
    ap.add_argument("--latency-messages", type=int, default=5_000)
    ap.add_argument("--bootstrap", default=os.environ.get("BENCH_KAFKA_BOOTSTRAP"))
    ap.add_argument("--no-peer", action="store_true", help="leave out the broker-package peer (its venv is built "
                                                           "once under .cache/peer from PyPI)")
    ap.add_argument("--no-visits", action="store_true", help="leave out the Rubin visit benchmark")
    ap.add_argument("--only-visits", action="store_true", help="run the Rubin visit benchmark alone")
    add_visit_arguments(ap)
    args = ap.parse_args()

    msgs = load_alert_bytes()
    print(f"{len(msgs)} distinct real ZTF alerts, mean {np.mean([len(m) for m in msgs]) / 1024:.1f} KiB", flush=True)
    report: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "load_average_1m_start": round(os.getloadavg()[0], 2), "distinct_alerts": len(msgs),
                    "batch": args.batch, "partitions": args.partitions, "model": args.model}
    if not args.only_visits:
        report.update(messages=args.messages, workers=args.workers)
        report.update(bench_decode(msgs))
        print(report, flush=True)
        report.update(bench_naive(msgs, model=args.model))
        if not args.no_peer:
            from bench.peer_ampel import bench_peer

            report.update(bench_peer(msgs))
            if report.get("peer_alerts_per_s"):
                # both in process on one core, measured back to back: the ratio that load moves least
                report["decode_only_vs_peer"] = round(report["decode_only_alerts_per_s"] / report["peer_alerts_per_s"], 2)
        print(report, flush=True)

    run_dir = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    bootstrap = args.bootstrap or start_broker(run_dir)
    try:
        if not args.only_visits:
            end_to_end(bootstrap, msgs, args, report)
        if not args.no_visits:
            report["visit"] = run_visits(bootstrap, msgs, first=args.visit_first, size=args.visit_size,
                                         visits=args.visit_count, interval=args.visit_interval,
                                         workers=args.visit_workers, partitions=args.partitions, batch=args.batch,
                                         model=args.model, rubin_fraction=args.rubin_fraction, pool=args.pool)
            print(json.dumps(report["visit"], indent=2), flush=True)
    finally:
        if not args.bootstrap:
            stop_broker(run_dir)
        # A 40,000-alert visit leaves gigabytes of broker log behind: never let runs pile up in /tmp.
        shutil.rmtree(run_dir, ignore_errors=True)
    report["load_average_1m_end"] = round(os.getloadavg()[0], 2)

    print(json.dumps(report, indent=2))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (REPO / "bench/results").mkdir(exist_ok=True)
    kind = "visits" if args.only_visits else "pipeline"
    (REPO / f"bench/results/{kind}-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    from bench.pipeline_rows import append_rows

    append_rows(REPO / "BENCHMARKS.md", report, args)


def end_to_end(bootstrap: str, msgs: list[bytes], args: argparse.Namespace, report: dict) -> None:
    """The backlog drain (throughput) and the paced run (latency), into ``report``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tag = uuid.uuid4().hex[:6]
    tin, tout = f"bench-in-{tag}", f"bench-out-{tag}"
    lin, lout = f"bench-lat-in-{tag}", f"bench-lat-out-{tag}"
    for f in admin.create_topics([NewTopic(t, args.partitions, 1) for t in (tin, tout, lin, lout)]).values():
        f.result(30)
    t0 = time.monotonic()
    produce(bootstrap, tin, msgs, args.messages)
    report["produce_seconds"] = round(time.monotonic() - t0, 2)
    run = run_worker(bootstrap, tin, tout, args.messages, args.batch, timeout=1800, model=args.model,
                     workers=args.workers)
    report["end_to_end_alerts_per_s"] = round(run["done"] / max(run["seconds"], 1e-9), 1)
    report["end_to_end_seconds"] = round(run["seconds"], 2)
    report["worker_peak_rss_mb"] = round(run["peak_rss_bytes"] / 2**20, 1)
    report["end_to_end_vs_naive"] = round(report["end_to_end_alerts_per_s"] / report["naive_loop_alerts_per_s"], 1)
    if report.get("peer_alerts_per_s"):
        report["end_to_end_vs_peer"] = round(report["end_to_end_alerts_per_s"] / report["peer_alerts_per_s"], 2)
    print(report, flush=True)

    # Latency under a steady load well below capacity, so it measures the pipeline, not a queue.
    rate = max(50.0, 0.4 * report["end_to_end_alerts_per_s"])
    n = min(args.latency_messages, int(rate * 30))
    import threading
    worker = threading.Thread(target=lambda: report.__setitem__(
        "_lat_run", run_worker(bootstrap, lin, lout, n, args.batch, timeout=600, model=args.model)))
    worker.start()
    time.sleep(8)  # the worker is up and assigned before the load starts
    produce(bootstrap, lin, msgs, n, rate=rate)
    worker.join()
    pairs = latencies(bootstrap, lin, lout)
    lat = pairs[:, 1]
    # Steady state: drop the first quarter of the run, where each new writer schema is seen (and its
    # reader generated) for the first time.
    steady = pairs[pairs[:, 0] >= pairs[0, 0] + 0.25 * (pairs[-1, 0] - pairs[0, 0]), 1]
    report.pop("_lat_run", None)
    report["latency_load_alerts_per_s"] = round(rate, 1)
    report["latency_messages"] = int(lat.size)
    report["latency_p50_s"] = round(float(np.percentile(lat, 50)), 4)
    report["latency_p99_s"] = round(float(np.percentile(lat, 99)), 4)
    report["latency_steady_p50_s"] = round(float(np.percentile(steady, 50)), 4)
    report["latency_steady_p99_s"] = round(float(np.percentile(steady, 99)), 4)
    report["latency_max_s"] = round(float(lat.max()), 4)


if __name__ == "__main__":
    main()
