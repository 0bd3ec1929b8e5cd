"""`stampflow top`: a live terminal view of one worker's /metrics, or of every worker through Prometheus.

The numbers come from pure functions over parsed samples (stream/prom_samples.py: rates from counter deltas
between two scrapes, quantiles from histogram buckets the way Prometheus' histogram_quantile estimates them),
gathered into a View (stream/top_view.py); rendering is a thin rich layer on top (stream/top_render.py), so
tests exercise the arithmetic on real exposition text. This module is the command: polling and the live loop.
"""
from __future__ import annotations

import argparse
import time
import urllib.parse

from schemas.errors import StampflowError
from stream.prom_query import http_get, rate_window, scrape, scrape_interval
from stream.prom_samples import Samples
from stream.top_render import render
from stream.top_view import View, view_from_prometheus, view_from_scrapes


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
