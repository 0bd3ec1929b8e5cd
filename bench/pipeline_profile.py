"""Where the worker's time goes, per alert: one `stampflow serve` worker drains a backlog under cProfile.

    .venv/bin/python bench/pipeline_profile.py --bootstrap HOST:PORT [--messages 10000] [--json out.json]

The worker runs in its own process, exactly as `make bench` runs it (same settings, same broker), with
``cProfile`` around `stream.worker.serve`. The profiler's clock is the **main thread's CPU time**
(``time.thread_time``), so the table is CPU seconds and does not grow when other processes load the cores (wall
rates do). What librdkafka's and TensorFlow's own threads spend is not on the main thread: it is reported beside
the table as the process's total CPU (``/proc/<pid>/stat``) minus the main thread's, and the broker's CPU (the
JVM's ``/proc`` counters) over the same drain.

Stages (cumulative CPU of the function that does that job; the rest of the loop is "other"):
consume (`KafkaSource.poll`), decode (`Decoder.decode`), stamp (`Stamp.image`: gunzip + FITS), preprocess
(`prepare_batch` and `stamp_flags`, less the stamps they decode), inference (`predict_batch`), result build
(`ResultBuilder.build`), result encoding (Avro of the result), produce (`producer.produce` and ``poll``), delivery
reports (the sink's ``flush`` and its delivery callbacks), commit (`KafkaSource.commit`), accounting (the
observers of acknowledged batches).
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: stage -> (file suffix, function name) whose cumulative time is that stage. Suffixes, so the table is the same
#: from a checkout anywhere.
STAGES: dict[str, list[tuple[str, str]]] = {
    "consume": [("stream/sources.py", "poll")],
    "decode": [("stream/decode/decoder.py", "decode")],
    "stamp": [("schemas/stamps.py", "image")],
    "preprocess": [("models/preprocess.py", "prepare_batch"), ("stream/routing.py", "stamp_flags")],
    "inference": [("*", "predict_batch")],
    "result build": [("stream/results.py", "build")],
    "result encoding": [("schemas/results.py", "encode_schemaless"), ("stream/results.py", "encode_result")],
    "produce": [("stream/sinks.py", "write_results"), ("stream/sinks.py", "write_dead_letters")],
    "delivery reports": [("stream/sinks.py", "flush"), ("stream/sinks.py", "_on_delivery")],
    "commit": [("stream/sources.py", "commit")],
    "accounting": [("stream/accounting.py", "on_acknowledged"), ("stream/truth.py", "on_acknowledged"),
                   ("stream/accounting.py", "consumed"), ("stream/accounting.py", "decoded")],
}
#: stages whose function runs inside another stage's (cumulative times nest): inner is subtracted from outer.
NESTED = {"preprocess": ["stamp"], "produce": ["result encoding"]}


def _cum(stats: pstats.Stats, suffix: str, name: str) -> tuple[float, int]:
    """Cumulative seconds and primitive calls of every function matching (file suffix, name), outermost only
    (a recursive or re-entrant call is counted once, as pstats' cumulative time already does)."""
    total, calls = 0.0, 0
    for (file, _line, fn), (cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if fn == name and (suffix == "*" or file.endswith(suffix)):
            total += ct
            calls += cc
    return total, calls


def stage_table(prof_path: Path, alerts: int) -> dict:
    """CPU microseconds per alert by stage (exclusive), and each stage's share of the profiled loop."""
    stats = pstats.Stats(str(prof_path))
    raw = {stage: sum(_cum(stats, s, n)[0] for s, n in funcs) for stage, funcs in STAGES.items()}
    excl = dict(raw)
    for outer, inners in NESTED.items():
        for inner in inners:
            # only the part of the inner stage that ran under the outer one is inside it
            excl[outer] -= raw[inner]  # the inner stage runs only inside the outer one
    engine_run = _cum(stats, "stream/engine.py", "handle")[0] + _cum(stats, "stream/engine.py", "next_batch")[0]
    excl["other (loop, batching, metrics)"] = engine_run - sum(excl.values())
    return {"main_thread_cpu_s": round(engine_run, 3),
            "per_alert_us": {k: round(v / alerts * 1e6, 1) for k, v in excl.items()},
            "share": {k: round(v / max(engine_run, 1e-9), 3) for k, v in excl.items()}}


#: py-spy frames (function name, file suffix) -> stage; the innermost matching frame of a sample decides.
SPY_STAGES = [(n, f, stage) for stage, funcs in STAGES.items() for f, n in funcs]


def spy_table(path: Path, alerts: int) -> dict:
    """Samples of the worker's main loop per stage (py-spy ``--format raw``: one collapsed stack per line with its
    count; only active samples are recorded), as shares and as microseconds per alert at the sampling rate."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not any("(stream/engine.py" in fr or "stream/engine.py:" in fr for fr in frames):
            continue  # not the worker loop (metrics server, model load)
        stage = "other (loop, batching, metrics)"
        for fr in reversed(frames):
            name = fr.split(" ", 1)[0].rsplit(".", 1)[-1]  # py-spy qualifies methods: Decoder.decode
            hit = next((st for fn, f, st in SPY_STAGES if name == fn and (f == "*" or f in fr)), None)
            if hit:
                stage = hit
                break
        counts[stage] = counts.get(stage, 0) + int(n)
        total += int(n)
    return {"samples": total, "share": {k: round(v / max(total, 1), 3) for k, v in
                                        sorted(counts.items(), key=lambda kv: -kv[1])}}


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (librdkafka names its threads rdk:*; Python's main thread has the
    process name)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "rdk:broker" if name.startswith("rdk:broker") else name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def worker_main(prof_out: str, profile: bool, warm_batches: int) -> None:
    """Inside the worker process: serve until SIGTERM; with ``profile``, profile every batch after the first
    ``warm_batches`` (steady state: the one-time costs of the first batches, each new writer schema's generated
    reader and the lazy imports of the first model call, are left out), then write the profile."""
    import cProfile

    from stream.config import Settings
    from stream.engine import Engine
    from stream.worker import serve

    prof = cProfile.Profile(time.thread_time)
    seen = {"batches": 0, "profiled_alerts": 0}
    handle, next_batch = Engine.handle, Engine.next_batch

    def profiled_handle(self, items):
        seen["batches"] += 1
        if not profile or seen["batches"] <= warm_batches:
            return handle(self, items)
        seen["profiled_alerts"] += len(items)
        prof.enable()
        try:
            return handle(self, items)
        finally:
            prof.disable()

    def profiled_next_batch(self):
        if not profile or seen["batches"] < warm_batches:
            return next_batch(self)
        prof.enable()
        try:
            return next_batch(self)
        finally:
            prof.disable()

    Engine.handle, Engine.next_batch = profiled_handle, profiled_next_batch
    try:
        serve(Settings())
    finally:
        if profile:
            prof.dump_stats(prof_out)
        Path(prof_out + ".cpu").write_text(json.dumps({"process_cpu_s": _proc_cpu(os.getpid()),
                                                        "main_thread_cpu_s": time.thread_time(), **seen}))


def profile_run(bootstrap: str, messages: int, batch: int = 256, partitions: int = 2, model: str = "stargal",
                broker_pid: int | None = None, extra_env: dict | None = None, msgs: list[bytes] | None = None,
                profile: bool = True, warm_batches: int = 2, py_spy: str | None = None,
                poll_s: float | None = None) -> dict:
    from confluent_kafka.admin import AdminClient, NewTopic

    from bench.decode_throughput import load_alert_bytes
    from bench.pipeline_workers import POLL_S, free_port, metric, scrape

    poll_s = POLL_S if poll_s is None else poll_s
    from bench.run_pipeline_bench import produce

    msgs = msgs or load_alert_bytes()
    tag = uuid.uuid4().hex[:6]
    tin, tout = f"prof-in-{tag}", f"prof-out-{tag}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, partitions, 1) for t in (tin, tout, tout + "-dead")]).values():
        f.result(30)
    produce(bootstrap, tin, msgs, messages)
    prof_path = Path(tempfile.gettempdir()) / f"stampflow-prof-{tag}.prof"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAMPFLOW_") or k == "STAMPFLOW_DATA"}
    env.update({"STAMPFLOW_MODELS__NAMES": json.dumps([model]), "STAMPFLOW_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                "STAMPFLOW_KAFKA__GROUP_ID": f"prof-{tag}", "STAMPFLOW_KAFKA__INPUT_TOPICS": json.dumps([tin]),
                "STAMPFLOW_KAFKA__RESULT_TOPIC": tout, "STAMPFLOW_KAFKA__DEAD_LETTER_TOPIC": tout + "-dead",
                "STAMPFLOW_METRICS__PORT": str(port), "STAMPFLOW_BATCH__MAX_SIZE": str(batch),
                "STAMPFLOW_LOG_LEVEL": "WARNING", **(extra_env or {})})
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_worker", str(prof_path),
                             str(int(profile)), str(warm_batches)], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while True:
            try:
                metric(port, "stampflow_messages_consumed_total")
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("worker did not start: " + (proc.stderr.read().decode()[-2000:]
                                                                   if proc.poll() is not None else "timeout"))
                time.sleep(0.2)
        first = None
        cpu0 = broker0 = None
        done = 0.0
        while time.time() < deadline + 1800:
            c = scrape(port)
            consumed = c["stampflow_messages_consumed_total"]
            if first is None and consumed > 0:
                first = time.monotonic()
                cpu0 = _proc_cpu(proc.pid)
                threads0 = _threads_cpu(proc.pid)
                if py_spy:
                    spy = subprocess.Popen([py_spy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate",
                                            "250", "--nonblocking", "-o", str(prof_path) + ".spy.txt"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                broker0 = _proc_cpu(broker_pid) if broker_pid else None
            done = c["stampflow_results_published_total"] + c["stampflow_dead_letters_total"]
            if done >= messages:
                break
            time.sleep(poll_s)
        wall = time.monotonic() - (first or time.monotonic())
        worker_cpu = _proc_cpu(proc.pid) - (cpu0 or 0.0)
        threads = {k: v - threads0.get(k, 0.0) for k, v in _threads_cpu(proc.pid).items()}
        if py_spy and first is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        broker_cpu = (_proc_cpu(broker_pid) - broker0) if broker_pid else None
        load = os.getloadavg()[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    out = {"messages": messages, "done": done, "wall_s": round(wall, 2), "alerts_per_s_wall": round(done / wall, 1),
           "worker_process_cpu_us_per_alert": round(worker_cpu / messages * 1e6, 1),
           "broker_cpu_us_per_alert": None if broker_cpu is None else round(broker_cpu / messages * 1e6, 1),
           "load_average_1m": load, "env": extra_env or {},
           "worker_threads_cpu_us_per_alert": {k: round(v / messages * 1e6, 1) for k, v in
                                               sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0}}
    if py_spy:
        out["py_spy"] = spy_table(Path(str(prof_path) + ".spy.txt"), messages)
    cpu = json.loads(Path(str(prof_path) + ".cpu").read_text())
    if profile:
        out["profiled_alerts"] = cpu["profiled_alerts"]
        out.update(stage_table(prof_path, cpu["profiled_alerts"]))
    # CPU outside the main thread over the whole process life (model load included: an upper bound for the drain)
    out["worker_other_threads_cpu_s_whole_life"] = round(cpu["process_cpu_s"] - cpu["main_thread_cpu_s"], 2)
    out["profile"] = str(prof_path) if profile else None
    return out


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--broker-pid", type=int, default=None, help="the broker JVM's pid, to count its CPU too")
    ap.add_argument("--env", action="append", default=[], help="extra worker setting, KEY=VALUE (repeatable)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-profile", action="store_true", help="no profiler: only the CPU per alert of worker and broker")
    ap.add_argument("--py-spy", default=None, help="path of a py-spy binary: sample the (unprofiled) worker with it")
    ap.add_argument("--poll", type=float, default=None, help="seconds between reads of the worker's /metrics")
    ap.add_argument("--warm-batches", type=int, default=2, help="batches left out of the profile (one-time costs)")
    args = ap.parse_args()
    extra = dict(e.split("=", 1) for e in args.env)
    out = profile_run(args.bootstrap, args.messages, args.batch, broker_pid=args.broker_pid, extra_env=extra,
                      profile=not args.no_profile, warm_batches=args.warm_batches, py_spy=args.py_spy,
                      poll_s=args.poll)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
