"""Reading metrics over HTTP: one worker's /metrics page, or a Prometheus server's query API.

Every failure to reach a URL, or an answer that is not what was asked for, is one StampflowError line.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request

from schemas.errors import StampflowError
from stream.prom_samples import Samples, parse_exposition

HTTP_TIMEOUT_S = 5.0


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


# -- Prometheus' HTTP API ----------------------------------------------------------------------------------------------
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
