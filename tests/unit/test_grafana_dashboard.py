"""The Grafana dashboard only queries metrics the worker really exports (directly or via recording rules)."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from stream.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "stampflow.json"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"

# Series Prometheus makes itself rather than scraping them from a worker.
PROMETHEUS_SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                "group_right", "inf", "nan", "start", "end"}


def exported_metric_names() -> set[str]:
    """Sample names a real worker exposes on /metrics, from its registry's families (labelled families with no
    children yet still count: the names are fixed when the metric is created)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        n = family.name
        if family.type == "counter":
            names |= {n + "_total"}
        elif family.type == "histogram":
            names |= {n + "_bucket", n + "_sum", n + "_count"}
        elif family.type == "summary":
            names |= {n, n + "_sum", n + "_count"}
        elif family.type == "info":
            names |= {n + "_info"}
        else:
            names |= {n}
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Metric names (and recording-rule names) an expression reads. Not a full PromQL parser: it removes what
    can hold other identifiers (strings, label matchers, ranges, grouping clauses, Grafana variables) and keeps
    identifiers that are neither functions (followed by '(') nor keywords."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", "1", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def recording_rules(rules_dir: Path = RULES_DIR) -> dict[str, str]:
    out = {}
    for f in sorted(rules_dir.glob("*.yml")):
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    out[rule["record"]] = rule["expr"]
    return out


def resolve(names: set[str], rules: dict[str, str], seen: frozenset = frozenset()) -> tuple[set[str], set[str]]:
    """(raw metric names, unknown recording-rule names), following recording rules down to scraped metrics."""
    raw, unknown = set(), set()
    for n in names:
        if ":" not in n:
            raw.add(n)
        elif n in seen:
            continue
        elif n not in rules:
            unknown.add(n)
        else:
            r, u = resolve(promql_metric_names(rules[n]), rules, seen | {n})
            raw |= r
            unknown |= u
    return raw, unknown


def dashboard_queries(dash: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, templating query and annotation of a dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
        out.append((f"variable {v['name']!r}", m.group(1) if m else q))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"annotation {a.get('name')!r}", a["expr"]))
    return out


def unknown_metrics(queries: list[tuple[str, str]], rules: dict[str, str], exported: set[str]) -> list[str]:
    problems = []
    allowed = exported | PROMETHEUS_SYNTHETIC
    for where, expr in queries:
        names = promql_metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        raw, unknown_rules = resolve(names, rules)
        problems += [f"{where}: recording rule {n} is not in {RULES_DIR.name}/" for n in sorted(unknown_rules)]
        problems += [f"{where}: metric {n} is not exported by the worker" for n in sorted(raw - allowed)]
    return problems


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_metric_names()


def test_promql_name_extraction():
    expr = ('sum by (job, topic) (rate(stampflow_dead_letters_total{job="$job", stage=~"de.*"}[5m] offset 1h)) '
            '/ on (job) group_left(topic) topic:stampflow_messages_consumed:rate1m{topic=~"${topic}"} '
            '> bool 0.05 unless histogram_quantile(0.99, x_bucket[$__rate_interval]) and Inf')
    assert promql_metric_names(expr) == {"stampflow_dead_letters_total", "topic:stampflow_messages_consumed:rate1m",
                                         "x_bucket"}


def test_exported_names_cover_every_metric_kind(exported):
    assert {"stampflow_messages_consumed_total", "stampflow_end_to_end_latency_seconds_bucket",
            "stampflow_inference_seconds_sum", "stampflow_consumer_lag", "stampflow_running_accuracy",
            "process_resident_memory_bytes"} <= exported
    assert "stampflow_messages_consumed" not in exported  # a counter is only ever scraped as *_total


def test_every_dashboard_metric_is_exported_by_the_worker(dashboard, exported):
    queries = dashboard_queries(dashboard)
    assert len(queries) > 25
    assert unknown_metrics(queries, recording_rules(), exported) == []


def test_dashboard_covers_the_required_views(dashboard):
    used = set()
    rules = recording_rules()
    for _, expr in dashboard_queries(dashboard):
        used |= resolve(promql_metric_names(expr), rules)[0]
    assert {"stampflow_messages_consumed_total", "stampflow_packets_classified_total",
            "stampflow_end_to_end_latency_seconds_bucket", "stampflow_consumer_lag", "stampflow_dead_letters_total",
            "stampflow_inference_seconds_bucket", "stampflow_inference_seconds_sum", "stampflow_running_accuracy",
            "stampflow_running_rmse", "stampflow_truth_labelled_total", "stampflow_batch_size_bucket",
            "process_resident_memory_bytes"} <= used


def test_dashboard_structure(dashboard):
    ids = []

    def walk(panels):
        for p in panels:
            ids.append(p["id"])
            assert p["type"] == "row" or p["datasource"]["uid"] == "${datasource}", p["title"]
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names[0] == "datasource" and {"job", "topic", "model"} <= set(names)
    assert dashboard["uid"] == "stampflow-workers"


def test_a_misspelt_metric_in_a_panel_is_caught(dashboard, exported):
    doctored = copy.deepcopy(dashboard)
    panel = next(p for p in doctored["panels"] if p.get("title") == "Worker memory (RSS)")
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace("process_resident_memory_bytes",
                                                                      "process_resident_memory_byte")
    problems = unknown_metrics(dashboard_queries(doctored), recording_rules(), exported)
    assert problems == ["panel 'Worker memory (RSS)' target A: metric process_resident_memory_byte is not "
                        "exported by the worker"]


def test_a_misspelt_recording_rule_or_rule_input_is_caught(dashboard, exported, tmp_path):
    doctored = copy.deepcopy(dashboard)
    panel = next(p for p in doctored["panels"] if p.get("title") == "Lag per topic")
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace("topic:stampflow_consumer_lag:sum",
                                                                      "topic:stampflow_consumer_lags:sum")
    problems = unknown_metrics(dashboard_queries(doctored), recording_rules(), exported)
    assert problems == ["panel 'Lag per topic' target A: recording rule topic:stampflow_consumer_lags:sum is not "
                        "in rules/"]

    # A rule the dashboard uses that reads a metric the worker does not export (a counter without _total).
    text = (RULES_DIR / "recording.yml").read_text()
    bad = text.replace("rate(stampflow_packets_classified_total[1m]))\n      - record: model:",
                       "rate(stampflow_packets_classified[1m]))\n      - record: model:")
    assert bad != text
    (tmp_path / "recording.yml").write_text(bad)
    problems = unknown_metrics(dashboard_queries(dashboard), recording_rules(tmp_path), exported)
    assert problems and all("metric stampflow_packets_classified is not exported" in p for p in problems)
    assert any("Packets classified per model" in p for p in problems)
