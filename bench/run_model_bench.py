"""Per-model inference benchmark through the serving path. Reports; never asserts.

For every model in the registry (or those named with --models), in ONE process, the way a worker holds them:
  1. load through the registry (the class the worker uses: `KerasCNN` for CNNs, `StarGalaxyGP` for the GP);
  2. images/s at batch sizes 1, 32 and 256 through `predict_batch` (preprocessing recipe + the fixed-signature
     `tf.function`, traced once at load), median of several timed repeats after a warm-up;
  3. for CNNs, the same batches through `model.predict` (Keras' own loop), for comparison;
  4. peak RSS (VmHWM) of the process with every model loaded and exercised.
Inputs are random arrays of each model's declared input shape (pixel values do not change CNN speed).
Writes bench/results/models-<utc>.json and appends rows to the "Model inference" table in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

# A worker limits OpenBLAS before numpy loads (`models.blas_threads`, default 1; stream.cli.limit_blas_threads):
# measure the serving path with the same limit. A value already in the environment is kept (and recorded).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from models.registry import Registry  # noqa: E402

BATCHES = (1, 32, 256)
TABLE_HEADER = "## Model inference (`bench/run_model_bench.py`)"


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_calls(fn, x: np.ndarray, min_seconds: float, min_repeats: int = 3) -> float:
    """Median seconds per call over repeats lasting at least ``min_seconds`` in total (after one warm-up)."""
    fn(x)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times)


def machine() -> dict:
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    try:
        from models.tensorflow_runtime import device_summary

        info["device"] = device_summary()
    except Exception as exc:  # report, never fail the bench on it
        info["device"] = {"error": str(exc)}
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated model names or name@version (default: the latest version of "
                                     "every model in the registry)")
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per measurement")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch bench/results or BENCHMARKS.md")
    args = ap.parse_args(argv)

    registry = Registry()
    names = args.models.split(",") if args.models else sorted({i.name for i in registry.list()})
    rss_before = peak_rss_mb()
    loaded = []
    for name in names:
        t0 = time.perf_counter()
        clf = registry.load(name)
        loaded.append((clf, time.perf_counter() - t0))
    rows = []
    rng = np.random.default_rng(0)
    for clf, load_s in loaded:
        spec = clf.input_spec
        row = {"model": clf.name, "version": clf.version, "family": clf.info.family,
               "trained_on": clf.info.metadata.get("trained_on"), "input": [spec.size, spec.size, spec.n_channels],
               "parameters": clf.info.metadata.get("parameters"), "load_s": round(load_s, 3),
               "serving_images_per_s": {}, "model_predict_images_per_s": {}}
        for b in BATCHES:
            x = rng.random((b, spec.size, spec.size, spec.n_channels), dtype=np.float32)
            s = time_calls(clf.predict_batch, x, args.seconds)
            row["serving_images_per_s"][str(b)] = round(b / s, 1)
            keras_model = getattr(clf, "model", None)
            if keras_model is not None:
                from models.preprocess import apply_recipe

                prepared = apply_recipe(x, clf.recipe)
                s = time_calls(lambda a: keras_model.predict(a, batch_size=b, verbose=0), prepared, args.seconds)
                row["model_predict_images_per_s"][str(b)] = round(b / s, 1)
        # the machine may be shared: the 1-minute load average after the model's points, with every row
        row["load_average_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "peak_rss_mb_all_models": round(peak_rss_mb(), 1), "rss_before_models_mb": round(rss_before, 1),
              "models": rows, "batches": list(BATCHES), "seconds_per_point": args.seconds}
    print(json.dumps({k: v for k, v in result.items() if k != "models"}, indent=2))
    if not args.no_write:
        write(result)
    return 0


def write(result: dict) -> None:
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = result["date"].replace(":", "").replace("-", "")
    (out_dir / f"models-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    dev = result["machine"].get("device", {})
    where = f"{result['machine']['machine']}, {result['machine']['cpus']} cores, {dev.get('device', '?')}" + \
        (f" ({dev.get('name')})" if dev.get("device") == "GPU" else "") + \
        (", oneDNN" if dev.get("onednn") else "") + \
        (f", OpenBLAS {result['machine']['openblas_threads']} thread(s)" if result["machine"].get("openblas_threads")
         else "")
    lines = []
    for r in result["models"]:
        sv, mp = r["serving_images_per_s"], r["model_predict_images_per_s"]
        lines.append(f"| {result['date']} | {where} | {r['model']}@{r['version']} | {'x'.join(map(str, r['input']))} | "
                     f"{r['parameters'] or '–'} | {sv['1']} | {sv['32']} | {sv['256']} | "
                     f"{mp.get('1', '–')} | {mp.get('32', '–')} | {mp.get('256', '–')} | "
                     f"{result['peak_rss_mb_all_models']} |")
    bench = REPO / "BENCHMARKS.md"
    text = bench.read_text()
    if TABLE_HEADER not in text:
        text = text.rstrip() + "\n\n" + TABLE_HEADER + "\n\n" + MODEL_TABLE_INTRO + "\n\n" + MODEL_TABLE_HEAD + "\n"
    head_at = text.index(MODEL_TABLE_HEAD, text.index(TABLE_HEADER)) + len(MODEL_TABLE_HEAD) + 1
    text = text[:head_at] + "\n".join(lines) + "\n" + text[head_at:]
    bench.write_text(text)


MODEL_TABLE_INTRO = """How it measures: every model loaded in one process through the registry (as one worker holds them);
images/s = batch size / median seconds per `predict_batch` call (the serving path: preprocessing recipe plus the
fixed-signature `tf.function`) over >= 2 s of repeats after a warm-up, on random inputs of the declared shape;
`model.predict` columns time Keras' own loop on the same prepared batches. Peak RSS is the process VmHWM with
every model loaded and exercised. Target on the 2-core CPU: >= 1,000 images/s at batch 256 for every model but
the spin CNN."""

MODEL_TABLE_HEAD = """| date | machine | model | input | params | serve b=1 /s | serve b=32 /s | serve b=256 /s | predict b=1 /s | predict b=32 /s | predict b=256 /s | peak RSS MB (all) |
|---|---|---|---|---|---|---|---|---|---|---|---|"""


if __name__ == "__main__":
    sys.exit(main())
