"""`stampflow report`: throughput and latency over a run, as PNG plots and a summary JSON.

Both inputs become the same thing, a time-ordered list of snapshots of the worker's cumulative samples: the
worker's metrics log (metrics.log_file, one JSON line per interval) or Prometheus' raw series over
[--start, --end] at --step. Everything else is computed here from differences between consecutive snapshots,
the way rate() does it: a counter that went down was reset by a restart, and a series that first appears
starts from zero. The first snapshot is the baseline, so work done before it is not counted.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from schemas.errors import StampflowError
from stream.fmt import fmt_seconds
from stream.prom_query import prometheus_query_range
from stream.prom_samples import QUANTILES, histogram_quantile

Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)

COUNTERS = ("stampflow_messages_consumed_total", "stampflow_results_published_total",
            "stampflow_dead_letters_total", "stampflow_packets_classified_total",
            "stampflow_end_to_end_latency_seconds_bucket")
GAUGES = ("process_resident_memory_bytes",)


@dataclass
class Snapshot:
    ts: float
    samples: dict[Key, float]


@dataclass
class Interval:
    start: float
    end: float
    consumed: dict[str, float] = field(default_factory=dict)  # topic -> messages in the interval
    published: float = 0.0
    latency: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # reference -> cumulative buckets

    @property
    def dt(self) -> float:
        return self.end - self.start

    def rate(self, topic: str | None = None) -> float:
        n = sum(self.consumed.values()) if topic is None else self.consumed.get(topic, 0.0)
        return n / self.dt if self.dt > 0 else 0.0


def _key(name: str, labels: dict[str, str]) -> Key:
    return name, tuple(sorted(labels.items()))


# -- inputs ------------------------------------------------------------------------------------------------------------
def load_metrics_log(path: Path, start: float | None = None, end: float | None = None) -> list[Snapshot]:
    if not path.is_file():
        raise StampflowError(f"metrics log not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                ts = float(rec["ts"])
                # host:pid tells a restarted worker (same file, new process) from the one before it.
                instance = f"{rec.get('host', '')}:{rec.get('pid', '')}"
                samples = {_key(name, {**labels, "instance": instance}): float(value)
                           for name, labels, value in rec["samples"] if value is not None}
            except (ValueError, KeyError, TypeError) as exc:
                raise StampflowError(f"{path} line {n} is not a stampflow metrics snapshot ({exc})") from None
            if (start is None or ts >= start) and (end is None or ts <= end):
                out.append(Snapshot(ts, samples))
    out.sort(key=lambda s: s.ts)
    return _merge_writers(out)


def _merge_writers(snapshots: list[Snapshot]) -> list[Snapshot]:
    """Carry every series' last value forward, so that with several workers writing one file each snapshot
    shows all of them (otherwise a worker absent from one line would look reset on the next)."""
    last: dict[Key, float] = {}
    merged = []
    for s in snapshots:
        last.update(s.samples)
        merged.append(Snapshot(s.ts, dict(last)))
    return merged


def load_prometheus(base: str, job: str, start: float, end: float, step: float) -> list[Snapshot]:
    if step <= 0:
        raise StampflowError("--step must be positive")
    if end <= start:
        raise StampflowError("--start must be before --end")
    names = "|".join(COUNTERS + GAUGES)
    rows = prometheus_query_range(base, f'{{__name__=~"{names}", job="{job}"}}', start, end, step)
    by_ts: dict[float, dict[Key, float]] = {}
    for metric, values in rows:
        labels = {k: v for k, v in metric.items() if k != "__name__"}
        key = _key(metric["__name__"], labels)
        for t, x in values:
            if math.isfinite(x):
                by_ts.setdefault(t, {})[key] = x
    if not by_ts:
        raise StampflowError(f"Prometheus at {base} has no stampflow samples for job=\"{job}\" between "
                             f"{_iso(start)} and {_iso(end)} (check --job, --start, --end)")
    return [Snapshot(t, by_ts[t]) for t in sorted(by_ts)]


# -- arithmetic ----------------------------------------------------------------------------------------------------------
def intervals(snapshots: list[Snapshot]) -> list[Interval]:
    if len(snapshots) < 2:
        raise StampflowError(f"need at least two snapshots to compute rates, got {len(snapshots)} "
                             "(a longer run, a smaller metrics.log_interval_s, or a smaller --step)")
    out = []
    last: dict[Key, float] = dict(snapshots[0].samples)
    for prev, snap in zip(snapshots, snapshots[1:]):
        iv = Interval(prev.ts, snap.ts)
        buckets: dict[str, dict[float, float]] = {}
        for key, value in snap.samples.items():
            name, labels = key
            if name not in COUNTERS:
                continue
            old = last.get(key, 0.0)
            inc = value if value < old else value - old
            d = dict(labels)
            if name == "stampflow_messages_consumed_total":
                iv.consumed[d.get("topic", "")] = iv.consumed.get(d.get("topic", ""), 0.0) + inc
            elif name == "stampflow_results_published_total":
                iv.published += inc
            elif name == "stampflow_end_to_end_latency_seconds_bucket":
                per_le = buckets.setdefault(d.get("reference", ""), {})
                le = float(d["le"])
                per_le[le] = per_le.get(le, 0.0) + inc
        for ref, per_le in buckets.items():
            iv.latency[ref] = sorted(per_le.items())
        last.update(snap.samples)
        out.append(iv)
    return out


def _totals(snapshots: list[Snapshot], name: str, keys: Iterable[str]) -> dict[tuple, float]:
    """Increase of counter ``name`` per group over the whole run (resets handled as in intervals())."""
    keys = tuple(keys)
    out: dict[tuple, float] = {}
    last = dict(snapshots[0].samples)
    for snap in snapshots[1:]:
        for key, value in snap.samples.items():
            if key[0] != name:
                continue
            old = last.get(key, 0.0)
            d = dict(key[1])
            group = tuple(d.get(k, "") for k in keys)
            out[group] = out.get(group, 0.0) + (value if value < old else value - old)
        last.update(snap.samples)
    return out


def _add_buckets(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    acc = dict(a)
    for le, n in b:
        acc[le] = acc.get(le, 0.0) + n
    return sorted(acc.items())


def summarize(snapshots: list[Snapshot], ivs: list[Interval], source: str) -> dict[str, Any]:
    consumed = {k[0]: v for k, v in sorted(_totals(snapshots, "stampflow_messages_consumed_total", ["topic"]).items())}
    total = sum(consumed.values())
    busy = [iv for iv in ivs if sum(iv.consumed.values()) > 0]
    # The active span runs from the last snapshot before the first message to the first one after the last:
    # idle time before and after a replay would otherwise dilute the mean.
    active = (busy[-1].end - busy[0].start) if busy else 0.0
    whole: dict[str, list[tuple[float, float]]] = {}
    for iv in ivs:
        for ref, b in iv.latency.items():
            whole[ref] = _add_buckets(whole.get(ref, []), b)
    rss = [v for s in snapshots for k, v in s.samples.items() if k[0] == "process_resident_memory_bytes"]
    return {
        "source": source,
        "start": _iso(snapshots[0].ts), "end": _iso(snapshots[-1].ts),
        "duration_s": round(snapshots[-1].ts - snapshots[0].ts, 3),
        "active_s": round(active, 3),
        "snapshots": len(snapshots),
        "totals": {
            "consumed": total,
            "consumed_by_topic": consumed,
            "published": sum(_totals(snapshots, "stampflow_results_published_total", []).values()),
            # Workers create every (topic, stage) series at zero up front; only stages that happened matter.
            "dead_letters_by_stage": {k[0]: v for k, v in sorted(
                _totals(snapshots, "stampflow_dead_letters_total", ["stage"]).items()) if v},
            "classified_by_model": {k[0]: v for k, v in sorted(
                _totals(snapshots, "stampflow_packets_classified_total", ["model"]).items())},
        },
        "mean_alerts_per_s": round(total / active, 3) if active > 0 else 0.0,
        "peak_alerts_per_s": round(max((iv.rate() for iv in ivs), default=0.0), 3),
        "latency_s": {ref: {"observations": b[-1][1] if b else 0.0,
                            **{f"p{round(q * 100)}": _round(histogram_quantile(q, b)) for q in QUANTILES}}
                      for ref, b in sorted(whole.items()) if b and b[-1][1] > 0},
        "peak_rss_bytes": max(rss) if rss else None,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


# -- plots ---------------------------------------------------------------------------------------------------------------
def _figure(height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_throughput(ivs: list[Interval], t0: float, path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    x = [iv.end - t0 for iv in ivs]
    topics = sorted({t for iv in ivs for t in iv.consumed})
    for topic in topics:
        ax.step(x, [iv.rate(topic) for iv in ivs], where="pre", label=f"{topic} consumed")
    if len(topics) != 1:
        ax.step(x, [iv.rate() for iv in ivs], where="pre", label="all topics", color="black", linewidth=1.5)
    ax.step(x, [iv.published / iv.dt if iv.dt > 0 else 0.0 for iv in ivs], where="pre", linestyle="--",
            label="results published", color="grey")
    ax.set_xlabel(f"seconds since {_iso(t0)}")
    ax.set_ylabel("alerts / s")
    ax.set_title("throughput")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.92, bottom=0.13)
    fig.savefig(path, format="png")


def plot_latency(ivs: list[Interval], t0: float, path: Path) -> None:
    refs = sorted({r for iv in ivs for r in iv.latency}) or ["(none)"]
    fig = _figure(3.2 * len(refs))
    for i, ref in enumerate(refs, 1):
        ax = fig.add_subplot(len(refs), 1, i)
        ys: list[float] = []
        for q in QUANTILES:
            pts = [(iv.end - t0, histogram_quantile(q, iv.latency.get(ref, []))) for iv in ivs]
            pts = [(t, y) for t, y in pts if y is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=f"p{round(q * 100)}")
                ys += [y for _, y in pts]
        if ys:
            from matplotlib.ticker import FuncFormatter, NullFormatter

            # Alert-time latency can span sub-second (live) to days (archival) in one run: log scale then.
            if min(ys) > 0 and max(ys) / min(ys) > 100:
                ax.set_yscale("log")
                ax.yaxis.set_minor_formatter(NullFormatter())
            else:
                ax.set_ylim(bottom=0, top=max(ys) * 1.1)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: fmt_seconds(y) if y > 0 else "0"))
            ax.legend(loc="best", fontsize="small")
        else:
            ax.text(0.5, 0.5, "no observations", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"end-to-end latency, reference={ref}")
        ax.grid(alpha=0.3)
    fig.axes[-1].set_xlabel(f"seconds since {_iso(t0)}")
    # Fixed margins: tight_layout measures every tick label of a log axis spanning many decades, and is slow.
    fig.subplots_adjust(left=0.1, right=0.98, top=0.93, bottom=0.1, hspace=0.45)
    fig.savefig(path, format="png")


# -- times ---------------------------------------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str | None, flag: str) -> float | None:
    """Unix seconds or ISO 8601 (a time without a zone is UTC)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise StampflowError(f"{flag} {text!r}: not unix seconds or ISO 8601 (e.g. 2026-11-22T02:30:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


# -- the command ---------------------------------------------------------------------------------------------------------
def build_report(snapshots: list[Snapshot], out: Path, source: str) -> dict[str, Any]:
    ivs = intervals(snapshots)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StampflowError(f"cannot create {out}: {exc.strerror or exc}") from None
    t0 = snapshots[0].ts
    plot_throughput(ivs, t0, out / "throughput.png")
    plot_latency(ivs, t0, out / "latency.png")
    summary = summarize(snapshots, ivs, source)
    summary["files"] = [str(out / "throughput.png"), str(out / "latency.png"), str(out / "summary.json")]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_report(args: argparse.Namespace) -> int:
    start, end = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    if args.metrics_log:
        snapshots = load_metrics_log(Path(args.metrics_log), start, end)
        source = f"metrics log {args.metrics_log}"
    else:
        end = end if end is not None else time.time()
        start = start if start is not None else end - 3600
        snapshots = load_prometheus(args.prometheus, args.job, start, end, args.step)
        source = f"Prometheus {args.prometheus} job={args.job} step={args.step:g}s"
    summary = build_report(snapshots, Path(args.out), source)
    print(json.dumps(summary, indent=2))
    return 0
