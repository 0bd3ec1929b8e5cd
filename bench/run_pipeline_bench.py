"""Pipeline benchmark: real alerts through a real broker and the real worker. Reports; never asserts.

Runs, in one go, on whatever machine it is started on:
  1. decode-only rate (in-process, one core): header + projected Avro, stamps left compressed; and with the
     science stamp decoded (what the star/galaxy model needs);
  2. a naive loop for comparison: fastavro.reader + astropy fits.open per stamp + one model call per alert;
  3. end-to-end throughput: the shared real ZTF alerts replicated to >= N messages in a topic, then one
     `stampflow serve` worker drains the backlog; alerts/s = messages / (last ack - first consume);
  4. end-to-end latency under a paced load (default 40% of the measured throughput): result log-append time
     minus input log-append time, per message, p50/p99;
  5. the worker's peak RSS (VmHWM) at the end.
Writes bench/results/pipeline-<utc>.json and appends a row to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

# the decode columns come from the decode benchmark, so both scripts measure them the same way
from bench.decode_throughput import bench_decode, load_alert_bytes  # noqa: E402


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


def start_broker(run_dir: Path) -> str:
    out = subprocess.run(["bash", str(REPO / "deploy/kafka/kafka.sh"), "start", str(run_dir)], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def stop_broker(run_dir: Path) -> None:
    subprocess.run(["bash", str(REPO / "deploy/kafka/kafka.sh"), "stop", str(run_dir)], capture_output=True)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def run_worker(bootstrap: str, topic: str, results: str, expect: int, batch: int, timeout: float,
               model: str = "stargal") -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAMPFLOW_") or k == "STAMPFLOW_DATA"}
    env.update({"STAMPFLOW_MODELS__NAMES": json.dumps([model]), "STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "STAMPFLOW_KAFKA__GROUP_ID": f"bench-{topic}",
                "STAMPFLOW_KAFKA__INPUT_TOPICS": json.dumps([topic]), "STAMPFLOW_KAFKA__RESULT_TOPIC": results,
                "STAMPFLOW_KAFKA__DEAD_LETTER_TOPIC": f"{results}-dead", "STAMPFLOW_METRICS__PORT": str(port),
                "STAMPFLOW_BATCH__MAX_SIZE": str(batch), "STAMPFLOW_LOG_LEVEL": "WARNING"})
    log = open(Path(tempfile.gettempdir()) / f"bench-worker-{topic}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "stream", "serve"], env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                metric(port, "stampflow_messages_consumed_total")
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("worker did not start")
                time.sleep(0.2)
        first = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            consumed = metric(port, "stampflow_messages_consumed_total")
            if first is None and consumed > 0:
                first = time.monotonic()
            done = metric(port, "stampflow_results_published_total") + metric(port, "stampflow_dead_letters_total")
            if done >= expect:
                break
            time.sleep(0.05)
        end = time.monotonic()
        rss = 0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) * 1024
        return {"seconds": end - (first or end), "done": done, "peak_rss_bytes": rss}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


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
    ap.add_argument("--latency-messages", type=int, default=5_000)
    ap.add_argument("--bootstrap", default=os.environ.get("BENCH_KAFKA_BOOTSTRAP"))
    args = ap.parse_args()

    msgs = load_alert_bytes()
    print(f"{len(msgs)} distinct real ZTF alerts, mean {np.mean([len(m) for m in msgs]) / 1024:.1f} KiB", flush=True)
    report: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "distinct_alerts": len(msgs), "messages": args.messages, "batch": args.batch,
                    "partitions": args.partitions}
    report.update(bench_decode(msgs))
    print(report, flush=True)
    report.update(bench_naive(msgs, model=args.model))
    report["model"] = args.model
    print(report, flush=True)

    run_dir = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    bootstrap = args.bootstrap or start_broker(run_dir)
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        tag = uuid.uuid4().hex[:6]
        tin, tout = f"bench-in-{tag}", f"bench-out-{tag}"
        lin, lout = f"bench-lat-in-{tag}", f"bench-lat-out-{tag}"
        for f in admin.create_topics([NewTopic(t, args.partitions, 1) for t in (tin, tout, lin, lout)]).values():
            f.result(30)
        t0 = time.monotonic()
        produce(bootstrap, tin, msgs, args.messages)
        report["produce_seconds"] = round(time.monotonic() - t0, 2)
        run = run_worker(bootstrap, tin, tout, args.messages, args.batch, timeout=1800,
                         model=args.model)
        report["end_to_end_alerts_per_s"] = round(run["done"] / max(run["seconds"], 1e-9), 1)
        report["end_to_end_seconds"] = round(run["seconds"], 2)
        report["worker_peak_rss_mb"] = round(run["peak_rss_bytes"] / 2**20, 1)
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
    finally:
        if not args.bootstrap:
            stop_broker(run_dir)

    print(json.dumps(report, indent=2))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (REPO / "bench/results").mkdir(exist_ok=True)
    (REPO / f"bench/results/pipeline-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    bm = REPO / "BENCHMARKS.md"
    if not bm.exists():
        bm.write_text("# Benchmarks\n\nEvery row is one run of a script in `bench/`; the JSON beside it in "
                      "`bench/results/` has the details.\n\n## Pipeline (`bench/run_pipeline_bench.py`)\n\n"
                      "| date | machine | messages | e2e alerts/s | p50 s | p99 s | steady p99 s | decode-only /s/core | "
                      "decode+stamp /s/core | naive loop /s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    row = (f"| {report['date']} | {report['machine']}, {args.model} | {args.messages} | {report['end_to_end_alerts_per_s']} | "
           f"{report['latency_p50_s']} | {report['latency_p99_s']} | {report['latency_steady_p99_s']} | "
           f"{report['decode_only_alerts_per_s']} | "
           f"{report['decode_with_science_stamp_alerts_per_s']} | {report['naive_loop_alerts_per_s']} | "
           f"{report['worker_peak_rss_mb']} |\n")
    text = bm.read_text()
    marker = "|---|---|---|---|---|---|---|---|---|---|---|\n"
    bm.write_text(text.replace(marker, marker + row, 1) if marker in text else text + row)


if __name__ == "__main__":
    main()
