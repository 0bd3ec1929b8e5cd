"""`stampflow top`: a live terminal view of one worker's /metrics, or of every worker through Prometheus.

The numbers come from pure functions over parsed samples (rates from counter deltas between two scrapes,
quantiles from histogram buckets the way Prometheus' histogram_quantile estimates them); rendering is a thin
rich layer on top, so tests exercise the arithmetic on real exposition text.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Iterable

from prometheus_client.parser import text_string_to_metric_families

from schemas.errors import StampflowError

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]  # sample name -> sorted label pairs -> value
QUANTILES = (0.5, 0.95, 0.99)
HTTP_TIMEOUT_S = 5.0


# -- fetching -------------------------------------------------------------------------------------------------------
def http_get(url: str, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
    """(status, body); an HTTP error status is returned, not raised. Unreachable: one-line StampflowError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise StampflowError(f"cannot reach {url}: {getattr(exc.reason, 'strerror', None) or exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
        raise StampflowError(f"cannot reach {url}: {exc}") from None


def parse_exposition(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def scrape(url: str) -> Samples:
    status, body = http_get(url)
    if status != 200:
        raise StampflowError(f"{url} answered HTTP {status}")
    try:
        samples = parse_exposition(body.decode("utf-8", errors="replace"))
    except (ValueError, IndexError, KeyError):
        samples = {}
    if not any(name.startswith("stampflow_") for name in samples):
        raise StampflowError(f"{url} does not serve stampflow metrics (for a Prometheus server use --prometheus)")
    return samples


# -- arithmetic on samples --------------------------------------------------------------------------------------------
def sum_by(samples: Samples, name: str, keys: Iterable[str] = ()) -> dict[tuple, float]:
    """Sum the samples of ``name`` grouped by the values of ``keys`` (like PromQL's ``sum by``)."""
    keys = tuple(keys)
    out: dict[tuple, float] = {}
    for labels, value in samples.get(name, {}).items():
        d = dict(labels)
        k = tuple(d.get(key, "") for key in keys)
        out[k] = out.get(k, 0.0) + value
    return out


def counter_deltas(prev: Samples, cur: Samples, name: str, keys: Iterable[str] = ()) -> dict[tuple, float]:
    """Increase of a counter per group between two scrapes. A series that went down was reset (the worker
    restarted), so its whole current value is the increase, as in PromQL's rate()."""
    keys = tuple(keys)
    out: dict[tuple, float] = {}
    before = prev.get(name, {})
    for labels, value in cur.get(name, {}).items():
        old = before.get(labels, 0.0)
        inc = value if value < old else value - old
        d = dict(labels)
        k = tuple(d.get(key, "") for key in keys)
        out[k] = out.get(k, 0.0) + inc
    return out


def counter_rates(prev: Samples, cur: Samples, name: str, keys: Iterable[str], dt: float) -> dict[tuple, float]:
    if dt <= 0:
        return {}
    return {k: v / dt for k, v in counter_deltas(prev, cur, name, keys).items()}


def buckets_by(samples: Samples, name: str, keys: Iterable[str] = ()) -> dict[tuple, list[tuple[float, float]]]:
    """Cumulative (upper bound, count) pairs of histogram ``name`` (the ``_bucket`` series), per group."""
    keys = tuple(keys)
    acc: dict[tuple, dict[float, float]] = {}
    for labels, value in samples.get(name + "_bucket", {}).items():
        d = dict(labels)
        k = tuple(d.get(key, "") for key in keys)
        le = float(d["le"])
        acc.setdefault(k, {})
        acc[k][le] = acc[k].get(le, 0.0) + value
    return {k: sorted(v.items()) for k, v in acc.items()}


def bucket_deltas(prev: Samples, cur: Samples, name: str, keys: Iterable[str] = ()
                  ) -> dict[tuple, list[tuple[float, float]]]:
    keys = tuple(keys)
    inc = counter_deltas(prev, cur, name + "_bucket", keys + ("le",))
    acc: dict[tuple, list[tuple[float, float]]] = {}
    for k, v in inc.items():
        acc.setdefault(k[:-1], []).append((float(k[-1]), v))
    return {k: sorted(v) for k, v in acc.items()}


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' estimate: find the bucket holding rank q*count and interpolate linearly inside it.

    None when there are no observations. A rank in the +Inf bucket returns the highest finite bound (the
    estimate cannot say more), and the first bucket interpolates from 0 (or returns its bound if it is <= 0).
    """
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0 or not 0 <= q <= 1:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, (bound, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(bound):
                return buckets[-2][0] if len(buckets) > 1 else None
            if i == 0 and bound <= 0:
                return bound
            lower = prev_bound if i > 0 else 0.0
            in_bucket = count - prev_count
            if in_bucket <= 0:
                return bound
            return lower + (bound - lower) * (rank - prev_count) / in_bucket
        prev_bound, prev_count = bound, count
    return buckets[-2][0] if len(buckets) > 1 else None


def quantiles(buckets: list[tuple[float, float]], qs: Iterable[float] = QUANTILES) -> dict[float, float | None]:
    return {q: histogram_quantile(q, buckets) for q in qs}


def _count(buckets: list[tuple[float, float]]) -> float:
    return buckets[-1][1] if buckets else 0.0


# -- the view ---------------------------------------------------------------------------------------------------------
@dataclass
class ModelRow:
    classified_per_s: float | None = None
    classified: float = 0.0
    mean_s: float | None = None
    p95_s: float | None = None
    accuracy: float | None = None
    rmse: float | None = None
    labelled: float | None = None


@dataclass
class View:
    source: str
    state: dict[str, str] = field(default_factory=dict)
    throughput: dict[str, float | None] = field(default_factory=dict)  # topic -> alerts/s (None: one scrape only)
    consumed: dict[str, float] = field(default_factory=dict)  # topic -> total
    published_per_s: float | None = None
    published: float = 0.0
    latency: dict[str, dict[float, float | None]] = field(default_factory=dict)  # reference -> quantiles
    latency_window: dict[str, str] = field(default_factory=dict)  # reference -> "last 1.0 s" / "since start"
    lag: dict[tuple[str, str], float] = field(default_factory=dict)  # (topic, partition) -> messages
    dead: dict[tuple[str, str], tuple[float, float | None]] = field(default_factory=dict)  # (topic, stage) -> total, /s
    models: dict[str, ModelRow] = field(default_factory=dict)
    rss_bytes: float | None = None
    error: str | None = None

    @property
    def total_rate(self) -> float | None:
        rates = [r for r in self.throughput.values() if r is not None]
        return sum(rates) if rates else None

    @property
    def total_lag(self) -> float:
        return sum(self.lag.values())


def view_from_scrapes(prev: Samples | None, cur: Samples, dt: float, source: str = "",
                      state: dict[str, str] | None = None) -> View:
    """Everything `top` shows from two scrapes ``dt`` seconds apart (``prev`` None: the first scrape only,
    so no rates and cumulative quantiles)."""
    v = View(source=source, state=dict(state or {}))
    have_rates = prev is not None and dt > 0
    p = prev or {}
    consumed = sum_by(cur, "stampflow_messages_consumed_total", ["topic"])
    rates = counter_rates(p, cur, "stampflow_messages_consumed_total", ["topic"], dt) if have_rates else {}
    for (topic,), total in sorted(consumed.items()):
        v.consumed[topic] = total
        v.throughput[topic] = rates.get((topic,), 0.0) if have_rates else None
    v.published = sum(sum_by(cur, "stampflow_results_published_total").values())
    if have_rates:
        v.published_per_s = sum(counter_rates(p, cur, "stampflow_results_published_total", [], dt).values())

    name = "stampflow_end_to_end_latency_seconds"
    cumulative = buckets_by(cur, name, ["reference"])
    recent = bucket_deltas(p, cur, name, ["reference"]) if have_rates else {}
    for (ref,), buckets in sorted(cumulative.items()):
        window = recent.get((ref,), [])
        if _count(window) > 0:
            v.latency[ref], v.latency_window[ref] = quantiles(window), f"last {dt:.1f} s"
        elif _count(buckets) > 0:
            v.latency[ref], v.latency_window[ref] = quantiles(buckets), "since start"

    for (topic, partition), lag in sorted(sum_by(cur, "stampflow_consumer_lag", ["topic", "partition"]).items(),
                                          key=lambda kv: (kv[0][0], _int_or_str(kv[0][1]))):
        v.lag[(topic, partition)] = lag

    dead_rates = counter_rates(p, cur, "stampflow_dead_letters_total", ["topic", "stage"], dt) if have_rates else {}
    for key, total in sorted(sum_by(cur, "stampflow_dead_letters_total", ["topic", "stage"]).items()):
        v.dead[key] = (total, dead_rates.get(key, 0.0) if have_rates else None)

    models = set(k[0] for k in sum_by(cur, "stampflow_model_info", ["model"]))
    models |= set(k[0] for k in sum_by(cur, "stampflow_inference_seconds_count", ["model"]))
    classified = sum_by(cur, "stampflow_packets_classified_total", ["model"])
    models |= set(k[0] for k in classified)
    cls_rates = counter_rates(p, cur, "stampflow_packets_classified_total", ["model"], dt) if have_rates else {}
    inf_cum = buckets_by(cur, "stampflow_inference_seconds", ["model"])
    inf_recent = bucket_deltas(p, cur, "stampflow_inference_seconds", ["model"]) if have_rates else {}
    sums = sum_by(cur, "stampflow_inference_seconds_sum", ["model"])
    counts = sum_by(cur, "stampflow_inference_seconds_count", ["model"])
    d_sums = counter_deltas(p, cur, "stampflow_inference_seconds_sum", ["model"]) if have_rates else {}
    d_counts = counter_deltas(p, cur, "stampflow_inference_seconds_count", ["model"]) if have_rates else {}
    accuracy = sum_by(cur, "stampflow_running_accuracy", ["model"])
    rmse = sum_by(cur, "stampflow_running_rmse", ["model"])
    labelled = sum_by(cur, "stampflow_truth_labelled_total", ["model"])
    for model in sorted(models):
        k = (model,)
        row = ModelRow(classified=classified.get(k, 0.0),
                       classified_per_s=cls_rates.get(k, 0.0) if have_rates else None,
                       accuracy=accuracy.get(k), rmse=rmse.get(k), labelled=labelled.get(k))
        if d_counts.get(k, 0) > 0:
            row.mean_s = d_sums[k] / d_counts[k]
            row.p95_s = histogram_quantile(0.95, inf_recent.get(k, []))
        elif counts.get(k, 0) > 0:
            row.mean_s = sums[k] / counts[k]
            row.p95_s = histogram_quantile(0.95, inf_cum.get(k, []))
        v.models[model] = row

    rss = cur.get("process_resident_memory_bytes", {})
    v.rss_bytes = sum(rss.values()) if rss else None
    if "stampflow_ready" in cur and "ready" not in v.state:
        v.state["ready"] = "yes" if sum(cur["stampflow_ready"].values()) >= 1 else "no"
    return v


def _int_or_str(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


# -- Prometheus as the source ------------------------------------------------------------------------------------------
def prometheus_api(base: str, path: str, params: dict[str, str]) -> object:
    url = f"{base.rstrip('/')}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    status, body = http_get(url, timeout=30)
    try:
        payload = json.loads(body)
    except ValueError:
        raise StampflowError(f"{base} is not a Prometheus server (HTTP {status} from {url.split('?')[0]})") from None
    if payload.get("status") != "success":
        raise StampflowError(f"Prometheus at {base}: {payload.get('errorType', 'error')}: "
                             f"{payload.get('error', f'HTTP {status}')}")
    return payload["data"]


def prometheus_query(base: str, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    data = prometheus_api(base, "query", params)
    if data["resultType"] == "scalar":
        return [({}, float(data["result"][1]))]
    return [(r["metric"], float(r["value"][1])) for r in data["result"]]


def prometheus_query_range(base: str, expr: str, start: float, end: float, step: float
                           ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    data = prometheus_api(base, "query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                "step": f"{step:g}"})
    return [(r["metric"], [(float(t), float(x)) for t, x in r["values"]]) for r in data["result"]]


def parse_duration(text: str) -> float:
    """Prometheus duration ('15s', '1m30s', '2h') in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(a + b for a, b in parts) != text.strip():
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def scrape_interval(base: str, job: str) -> float:
    """The job's scrape interval from the server's loaded config (1m, Prometheus' default, if unstated)."""
    import yaml

    try:
        config = yaml.safe_load(prometheus_api(base, "status/config", {})["yaml"]) or {}
        default = config.get("global", {}).get("scrape_interval", "1m")
        for sc in config.get("scrape_configs", []):
            if sc.get("job_name") == job:
                return parse_duration(str(sc.get("scrape_interval", default)))
        return parse_duration(str(default))
    except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return 60.0


def rate_window(scrape_s: float, at_least_s: float = 0.0) -> str:
    """A rate() window with four scrapes in it, so rates are steady and never empty."""
    return f"{max(4 * scrape_s, at_least_s, 1.0):g}s"


def _by(rows: list[tuple[dict[str, str], float]], *keys: str) -> dict[tuple, float]:
    return {tuple(m.get(k, "") for k in keys): v for m, v in rows}


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def view_from_prometheus(base: str, job: str, window: str) -> View:
    j = f'job="{job}"'

    def q(expr: str) -> list[tuple[dict[str, str], float]]:
        return prometheus_query(base, expr)

    v = View(source=f"{base} (job={job}, rates over {window})")
    up = q(f"up{{{j}}}")
    if not up:
        raise StampflowError(f"Prometheus at {base} scrapes no target with job=\"{job}\" (see --job)")
    ready = q(f"sum(stampflow_ready{{{j}}})")
    v.state["workers up"] = f"{sum(1 for _, x in up if x == 1)}/{len(up)}"
    v.state["ready"] = f"{int(ready[0][1]) if ready else 0}/{len(up)}"
    rates = _by(q(f"sum by (topic) (rate(stampflow_messages_consumed_total{{{j}}}[{window}]))"), "topic")
    for (topic,), total in sorted(_by(q(f"sum by (topic) (stampflow_messages_consumed_total{{{j}}})"),
                                      "topic").items()):
        v.consumed[topic] = total
        v.throughput[topic] = _finite(rates.get((topic,), 0.0))
    pub = q(f"sum(stampflow_results_published_total{{{j}}})")
    v.published = pub[0][1] if pub else 0.0
    pub_rate = q(f"sum(rate(stampflow_results_published_total{{{j}}}[{window}]))")
    v.published_per_s = _finite(pub_rate[0][1]) if pub_rate else None

    lat = "stampflow_end_to_end_latency_seconds_bucket"
    for label, rng in ((f"last {window}", f"rate({lat}{{{j}}}[{window}])"), ("since start", f"{lat}{{{j}}}")):
        for qv in QUANTILES:
            for (ref,), x in _by(q(f"histogram_quantile({qv}, sum by (reference, le) ({rng}))"),
                                 "reference").items():
                if ref in v.latency_window and v.latency_window[ref] != label:
                    continue  # the recent window already had observations for this reference
                if _finite(x) is None:
                    continue
                v.latency.setdefault(ref, {})[qv] = x
                v.latency_window[ref] = label

    for (topic, partition), x in sorted(_by(q(f"max by (topic, partition) (stampflow_consumer_lag{{{j}}})"),
                                            "topic", "partition").items(),
                                        key=lambda kv: (kv[0][0], _int_or_str(kv[0][1]))):
        v.lag[(topic, partition)] = x
    dead_rates = _by(q(f"sum by (topic, stage) (rate(stampflow_dead_letters_total{{{j}}}[{window}]))"),
                     "topic", "stage")
    for key, total in sorted(_by(q(f"sum by (topic, stage) (stampflow_dead_letters_total{{{j}}})"),
                                 "topic", "stage").items()):
        v.dead[key] = (total, _finite(dead_rates.get(key, 0.0)))

    per_model = {
        "classified": f"sum by (model) (stampflow_packets_classified_total{{{j}}})",
        "rate": f"sum by (model) (rate(stampflow_packets_classified_total{{{j}}}[{window}]))",
        "mean": f"sum by (model) (rate(stampflow_inference_seconds_sum{{{j}}}[{window}])) / "
                f"sum by (model) (rate(stampflow_inference_seconds_count{{{j}}}[{window}]))",
        "mean_all": f"sum by (model) (stampflow_inference_seconds_sum{{{j}}}) / "
                    f"sum by (model) (stampflow_inference_seconds_count{{{j}}})",
        "p95": f"histogram_quantile(0.95, sum by (model, le) (rate(stampflow_inference_seconds_bucket{{{j}}}"
               f"[{window}])))",
        "p95_all": f"histogram_quantile(0.95, sum by (model, le) (stampflow_inference_seconds_bucket{{{j}}}))",
        "accuracy": f"avg by (model) (stampflow_running_accuracy{{{j}}})",
        "rmse": f"avg by (model) (stampflow_running_rmse{{{j}}})",
        "labelled": f"sum by (model) (stampflow_truth_labelled_total{{{j}}})",
        "info": f"count by (model) (stampflow_model_info{{{j}}})",
    }
    got = {name: _by(q(expr), "model") for name, expr in per_model.items()}
    models = set().union(*(set(d) for d in got.values()))
    for k in sorted(models):
        recent = _finite(got["mean"].get(k))
        v.models[k[0]] = ModelRow(
            classified=got["classified"].get(k, 0.0), classified_per_s=_finite(got["rate"].get(k, 0.0)),
            mean_s=recent if recent is not None else _finite(got["mean_all"].get(k)),
            p95_s=_finite(got["p95"].get(k)) if recent is not None else _finite(got["p95_all"].get(k)),
            accuracy=_finite(got["accuracy"].get(k)), rmse=_finite(got["rmse"].get(k)),
            labelled=got["labelled"].get(k))
    rss = q(f"sum(process_resident_memory_bytes{{{j}}})")
    v.rss_bytes = rss[0][1] if rss else None
    return v


# -- rendering --------------------------------------------------------------------------------------------------------
def fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1:
        return f"{s * 1000:.1f} ms"
    for limit, div, unit in ((120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h")):
        if s < limit:
            return f"{s / div:.1f} {unit}"
    return f"{s / 86400:.1f} d"


def fmt_rate(r: float | None) -> str:
    return "-" if r is None else f"{r:,.1f}"


def fmt_count(c: float | None) -> str:
    return "-" if c is None else f"{c:,.0f}"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GiB"


def render(v: View):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text()
    head.append("stampflow top ", style="bold")
    head.append(v.source)
    head.append("   " + "  ".join(f"{k}: {val}" for k, val in v.state.items()))
    head.append(f"   rss: {fmt_bytes(v.rss_bytes)}")
    parts: list = [head]
    if v.error:
        parts.append(Text(f"last refresh failed: {v.error}", style="bold red"))

    t = Table(title="throughput", title_justify="left", expand=False)
    for col in ("topic", "alerts/s", "consumed"):
        t.add_column(col, justify="left" if col == "topic" else "right")
    for topic in v.consumed:
        t.add_row(topic, fmt_rate(v.throughput.get(topic)), fmt_count(v.consumed[topic]))
    t.add_row("all", fmt_rate(v.total_rate), fmt_count(sum(v.consumed.values())), style="bold")
    t.add_row("published", fmt_rate(v.published_per_s), fmt_count(v.published))
    parts.append(t)

    t = Table(title="end-to-end latency", title_justify="left")
    for col in ("reference", "p50", "p95", "p99", "over"):
        t.add_column(col, justify="left" if col in ("reference", "over") else "right")
    for ref, qs in v.latency.items():
        t.add_row(ref, *(fmt_seconds(qs.get(q)) for q in QUANTILES), v.latency_window.get(ref, ""))
    parts.append(t)

    t = Table(title=f"consumer lag (total {fmt_count(v.total_lag)})", title_justify="left")
    for col in ("topic", "partition", "lag"):
        t.add_column(col, justify="right" if col == "lag" else "left")
    for (topic, partition), lag in v.lag.items():
        t.add_row(topic, partition, fmt_count(lag))
    parts.append(t)

    t = Table(title="dead letters", title_justify="left")
    for col in ("topic", "stage", "total", "/s"):
        t.add_column(col, justify="left" if col in ("topic", "stage") else "right")
    for (topic, stage), (total, rate) in v.dead.items():
        t.add_row(topic, stage, fmt_count(total), fmt_rate(rate))
    if not v.dead:
        t.add_row("-", "-", "0", "-")
    parts.append(t)

    t = Table(title="models", title_justify="left")
    for col in ("model", "classified/s", "classified", "mean call", "p95 call", "accuracy", "rmse", "labelled"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for name, m in v.models.items():
        t.add_row(name, fmt_rate(m.classified_per_s), fmt_count(m.classified), fmt_seconds(m.mean_s),
                  fmt_seconds(m.p95_s), "-" if m.accuracy is None else f"{m.accuracy:.3f}",
                  "-" if m.rmse is None else f"{m.rmse:.4g}", fmt_count(m.labelled))
    parts.append(t)
    return Group(*parts)


# -- the command --------------------------------------------------------------------------------------------------------
def probe_state(metrics_url: str) -> dict[str, str]:
    """live/ready from the worker's probes next to /metrics ('?' for a worker without them)."""
    parts = urllib.parse.urlsplit(metrics_url)
    state = {}
    for name, path in (("live", "/livez"), ("ready", "/readyz")):
        url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        try:
            status, _ = http_get(url, timeout=2)
        except StampflowError:
            status = 0
        state[name] = {200: "yes", 503: "no"}.get(status, "?")
    return state


class _Poller:
    """Keeps the previous scrape so each refresh can compute rates over the interval just gone."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prev: Samples | None = None
        self.prev_t = 0.0
        self.window = None
        if args.prometheus:
            self.window = rate_window(scrape_interval(args.prometheus, args.job), 2 * args.interval)

    def view(self) -> View:
        a = self.args
        if a.prometheus:
            return view_from_prometheus(a.prometheus, a.job, self.window)
        cur = scrape(a.url)
        now = time.monotonic()
        v = view_from_scrapes(self.prev, cur, now - self.prev_t, source=a.url, state=probe_state(a.url))
        self.prev, self.prev_t = cur, now
        return v


def run_top(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    if args.interval <= 0:
        raise StampflowError("--interval must be positive")
    poller = _Poller(args)
    view = poller.view()  # an unreachable source fails here, with one line
    if args.once:
        if not args.prometheus:  # rates need a second scrape; Prometheus has them already
            time.sleep(args.interval)
            view = poller.view()
        Console(width=max(Console().width, 110)).print(render(view))
        return 0
    try:
        with Live(render(view), refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(args.interval)
                try:
                    view = poller.view()
                    view.error = None
                except StampflowError as exc:  # a restarting worker: keep the last numbers and say so
                    view.error = str(exc)
                live.update(render(view))
    except KeyboardInterrupt:
        return 0
