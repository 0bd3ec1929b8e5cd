"""Prometheus samples as plain dicts, and the arithmetic PromQL does over them.

Exposition text parses to ``Samples``; the functions below are pure (no I/O), so `top` and `report` and their
tests share one implementation of sum by, counter increases across restarts, and histogram_quantile.
"""
from __future__ import annotations

import math
from typing import Iterable

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]  # sample name -> sorted label pairs -> value
QUANTILES = (0.5, 0.95, 0.99)


def parse_exposition(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


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


def observations(buckets: list[tuple[float, float]]) -> float:
    """How many observations cumulative buckets hold (the +Inf bucket's count)."""
    return buckets[-1][1] if buckets else 0.0
