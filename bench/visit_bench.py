"""Rubin visits through the real broker and real workers: one peak burst, then steady visits. Reports; never asserts.

    .venv/bin/python bench/visit_bench.py [--first 40000 --size 10000 --visits 3 --interval 34] [--workers 2]
    .venv/bin/python bench/run_pipeline_bench.py --only-visits   # the same, from `make bench`'s script

What runs: the workers start (``--workers`` `stampflow serve` processes in one consumer group), see one copy of each
distinct alert (a live worker has met its schemas before a visit), and are ready. Then `stream.replay`'s
`VisitCadence` sends a burst of ``--first`` alerts, and ``--visits`` visits of ``--size`` alerts every
``--interval`` seconds after it, as fast as the producer takes each burst (Rubin: 40,000 at peak, 10,000 on
average, a visit about every 34 s).

What it measures, per visit, from the visit's first message (its ``start_unix`` in the replay stats, which is also
that message's Kafka timestamp) to each result (the broker's log-append time on the result topic): the time by
which 98% of the visit's alerts have a result, and by which 100% do. A visit's alerts are found by offset: per
input partition, the first offset at or after each visit's start (``offsets_for_times``). A dead letter counts as
an answer (none are expected: every alert is real); a missing result leaves the visit's 100% time empty.

The mix (`bench.visit_alerts`): real ZTF alerts (ZTF framing) are classified by the star/galaxy model; real Rubin
alerts (Confluent framing, schema 10.0 from ``lsst-alert-packet``) are decoded and published as unrouted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from bench.pipeline_workers import Workers, start_broker, stop_broker  # noqa: E402
from bench.visit_alerts import alert_pool, rubin_alerts  # noqa: E402


def _read_results(bootstrap: str, topic: str, expect: int, timeout: float = 300) -> list[tuple[dict, float]]:
    from schemas.results import decode_schemaless

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[tuple[dict, float]] = []
    idle, deadline = time.time(), time.time() + timeout
    while len(out) < expect and time.time() - idle < 10 and time.time() < deadline:
        ms = c.consume(2000, 0.5)
        if ms:
            idle = time.time()
        out.extend((decode_schemaless(m.value()), m.timestamp()[1] / 1000.0) for m in ms if m.error() is None)
    c.close()
    return out


def _visit_boundaries(bootstrap: str, topic: str, partitions: int, starts: list[float]) -> dict[int, list[int]]:
    """Per partition, the first offset of each visit (the first message at or after its start)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    out: dict[int, list[int]] = {}
    for p in range(partitions):
        _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        out[p] = []
        for s in starts:  # one call per time: a list naming the same partition twice keeps only one answer
            found = c.offsets_for_times([TopicPartition(topic, p, int(s * 1000))], timeout=30)[0]
            out[p].append(found.offset if found.offset >= 0 else high)
        out[p].append(high)
    c.close()
    return out


def percentile_time(times: list[float], n: int, q: float) -> float | None:
    """The time by which a share ``q`` of ``n`` alerts have a result (None if fewer than that have one)."""
    k = math.ceil(q * n)
    if k == 0:
        return 0.0
    if len(times) < k:
        return None
    return sorted(times)[k - 1]


def run_visits(bootstrap: str, ztf: list[bytes], *, first: int = 40_000, size: int = 10_000, visits: int = 3,
               interval: float = 34.0, workers: int = 1, partitions: int = 2, batch: int = 256,
               model: str = "stargal", rubin_fraction: float = 0.5, pool: int = 2000,
               extra_env: dict[str, str] | None = None) -> dict:
    from stream.config import Settings
    from stream.replay import VisitCadence, replay_messages

    values, kinds = alert_pool(ztf, pool, rubin_fraction)
    tag = uuid.uuid4().hex[:6]
    tin, tout = f"visit-in-{tag}", f"visit-out-{tag}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(tin, partitions, 1),
              NewTopic(tout, partitions, 1, config={"message.timestamp.type": "LogAppendTime"}),
              NewTopic(f"{tout}-dead", partitions, 1)]
    for f in admin.create_topics(topics).values():
        f.result(30)
    settings = Settings(kafka={"bootstrap_servers": bootstrap})

    def stream(n: int, offset: int = 0):
        for i in range(offset, offset + n):
            yield None, values[i % len(values)], f"pool#{i % len(values)}"

    warm = list(ztf) + rubin_alerts()  # each distinct real alert once: every writer schema is met before visit 0
    report: dict = {"first_visit": first, "visit_size": size, "visits_after_first": visits, "interval_s": interval,
                    "workers": workers, "partitions": partitions, "batch": batch, "model": model,
                    "rubin_fraction": rubin_fraction, "pool": pool, "load_average_1m_start": os.getloadavg()[0]}
    with Workers(bootstrap, tin, tout, group=f"visit-{tag}", n=workers, batch=batch, model=model,
                 extra_env=extra_env) as w:
        w.wait_up(assigned=workers <= partitions)  # a worker beyond the partitions stays unassigned
        replay_messages(settings, ((None, v, "warm-up") for v in warm), tin, progress=False)
        w.drain(len(warm), timeout=600)
        t_first = time.time()
        s1 = replay_messages(settings, stream(first), tin, progress=False, visit=VisitCadence(first, interval))
        starts = [v["start_unix"] for v in s1["visits"]]
        queued = [v["queued_s"] for v in s1["visits"]]
        late = s1["late_visits"]
        if visits:
            # the steady visits keep the cadence from the first burst: the next is due one interval after it
            while time.time() < t_first + interval - 0.01:
                time.sleep(0.01)
            s2 = replay_messages(settings, stream(size * visits, first), tin, progress=False,
                                 visit=VisitCadence(size, interval))
            starts += [v["start_unix"] for v in s2["visits"]]
            queued += [v["queued_s"] for v in s2["visits"]]
            late += s2["late_visits"]
        total = len(warm) + first + size * visits
        drained = w.drain(total, timeout=max(600.0, 20 * (first + size * visits) / 1000))
        report["worker_peak_rss_mb"] = round(drained["peak_rss_bytes"] / 2**20, 1)
        report["load_average_1m_end"] = os.getloadavg()[0]
    bounds = _visit_boundaries(bootstrap, tin, partitions, starts)
    sizes = [first] + [size] * visits
    answers = _read_results(bootstrap, tout, total)
    dead = _read_results_count(bootstrap, f"{tout}-dead")
    per_visit: list[list[float]] = [[] for _ in sizes]
    kinds_seen: list[dict[str, int]] = [{"classified": 0, "unrouted": 0} for _ in sizes]
    for rec, t in answers:
        p, off = rec["source"]["partition"], rec["source"]["offset"]
        b = bounds[p]
        for k in range(len(sizes)):
            if b[k] <= off < b[k + 1]:
                per_visit[k].append(t - starts[k])
                kinds_seen[k]["classified" if rec["predictions"] else "unrouted"] += 1
                break
    rows = []
    for k, n in enumerate(sizes):
        t98, t100 = percentile_time(per_visit[k], n, 0.98), percentile_time(per_visit[k], n, 1.0)
        rows.append({"visit": k, "alerts": n, "results": len(per_visit[k]), **kinds_seen[k],
                     "queued_s": queued[k], "t98_s": None if t98 is None else round(t98, 2),
                     "t100_s": None if t100 is None else round(t100, 2)})
    report.update(visits=rows, late_visits=late, dead_letters=dead,
                  mix={"ztf_share": round(kinds.count("ztf") / len(kinds), 3),
                       "rubin_share": round(kinds.count("rubin") / len(kinds), 3)})
    return report


def _read_results_count(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    n = 0
    for p in c.list_topics(topic, timeout=30).topics[topic].partitions:
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        n += high - low
    c.close()
    return n


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--visit-first", type=int, default=40_000, help="alerts in the first (peak) burst")
    ap.add_argument("--visit-size", type=int, default=10_000, help="alerts in each steady visit after it")
    ap.add_argument("--visit-count", type=int, default=3, help="steady visits after the first burst")
    ap.add_argument("--visit-interval", type=float, default=34.0, help="seconds from one visit's start to the next")
    ap.add_argument("--visit-workers", type=int, default=2,
                    help="worker processes in the consumer group (default: one per core of the 2-core target)")
    ap.add_argument("--rubin-fraction", type=float, default=0.5, help="share of Rubin alerts in the mix")
    ap.add_argument("--pool", type=int, default=2000, help="distinct messages (fresh candids) the stream cycles")


def main() -> None:
    from bench.decode_throughput import load_alert_bytes

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(ap)
    ap.add_argument("--bootstrap", default=os.environ.get("BENCH_KAFKA_BOOTSTRAP"))
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--consumer", default=None, help="JSON object of librdkafka consumer settings for the workers "
                                                      "(their kafka.consumer), e.g. a deeper prefetch")
    args = ap.parse_args()
    import tempfile

    run_dir = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    bootstrap = args.bootstrap or start_broker(run_dir)
    try:
        report = run_visits(bootstrap, load_alert_bytes(), first=args.visit_first, size=args.visit_size,
                            visits=args.visit_count, interval=args.visit_interval, workers=args.visit_workers,
                            partitions=args.partitions, batch=args.batch, rubin_fraction=args.rubin_fraction,
                            pool=args.pool,
                            extra_env={"STAMPFLOW_KAFKA__CONSUMER": args.consumer} if args.consumer else None)
    finally:
        if not args.bootstrap:
            stop_broker(run_dir)
        # A 40,000-alert visit leaves gigabytes of broker log behind: never let runs pile up in /tmp.
        shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
