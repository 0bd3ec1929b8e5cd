"""What `stampflow top` shows, as a plain `View`: built from two scrapes of one worker's /metrics, or from
PromQL over every worker of a Prometheus job. No rendering here (see stream/top_render.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from schemas.errors import StampflowError
from stream.prom_query import prometheus_query
from stream.prom_samples import (QUANTILES, Samples, bucket_deltas, buckets_by, counter_deltas, counter_rates,
                                 histogram_quantile, observations, quantiles, sum_by)


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


def _int_or_str(s: str):
    """Sort key that puts partitions in numeric order ("2" before "10")."""
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


# -- one worker's /metrics -------------------------------------------------------------------------------------------
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
        if observations(window) > 0:
            v.latency[ref], v.latency_window[ref] = quantiles(window), f"last {dt:.1f} s"
        elif observations(buckets) > 0:
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


# -- every worker of a Prometheus job ---------------------------------------------------------------------------------
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
