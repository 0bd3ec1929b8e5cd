"""`stampflow top`'s screen: a View as rich tables (rich is imported only when something is drawn)."""
from __future__ import annotations

from stream.fmt import fmt_bytes, fmt_count, fmt_rate, fmt_seconds
from stream.prom_samples import QUANTILES
from stream.top_view import View


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
