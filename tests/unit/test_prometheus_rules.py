"""deploy/prometheus: the config and rules pass promtool, and the rule unit tests pass and have teeth."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_grafana_dashboard import (PROMETHEUS_SYNTHETIC, exported_metric_names, promql_metric_names,
                                               recording_rules, resolve)

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERT_NAMES = {"StampflowWorkerDown", "StampflowStalled", "StampflowLagGrowing", "StampflowLatencyP99High",
               "StampflowDeadLetterRateHigh", "StampflowOutOfDistributionShareHigh"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: run `bash deploy/prometheus/install.sh` (installs Debian's "
                    "prometheus package, which provides prometheus and promtool)")
    return path


def run(promtool: str, *args: str, cwd: Path = PROM) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"promtool {proc.args[1:]} failed:\n{proc.stdout}\n{proc.stderr}"


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"]}


def test_config_is_valid(promtool):
    ok(run(promtool, "check", "config", "prometheus.yml"))


def test_kubernetes_example_in_the_config_is_valid(promtool, tmp_path):
    """The commented kubernetes_sd job is meant to be swapped in: it must be valid once uncommented."""
    text = (PROM / "prometheus.yml").read_text()
    block = re.search(r"^  # - job_name: stampflow\n(?:  #.*\n)+", text, re.MULTILINE)
    assert block, "the commented kubernetes_sd example is missing"
    uncommented = "\n".join(line.replace("  # ", "  ", 1) for line in block.group(0).splitlines()) + "\n"
    static_job = re.search(r"^  - job_name: stampflow\n(?:    .*\n|      .*\n)+", text, re.MULTILINE)
    swapped = text.replace(block.group(0), "").replace(static_job.group(0), uncommented)
    assert "kubernetes_sd_configs" in swapped and "worker-1:9108" not in swapped
    (tmp_path / "prometheus.yml").write_text(swapped)
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    proc = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    if "field kubernetes_sd_configs not found" not in proc.stdout + proc.stderr:
        ok(proc)
        return
    # Debian builds Prometheus without Kubernetes discovery, so its promtool cannot read this job. Check what
    # it can: with the discovery swapped for a static target, the rest of the job (relabelling) is valid.
    job = yaml.safe_load(uncommented)[0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["pod:9108"]}]
    config = yaml.safe_load(text)
    config["scrape_configs"] = [job]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    ok(run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path))


def test_rules_are_valid(promtool):
    ok(run(promtool, "check", "rules", "rules/recording.yml", "rules/alerts.yml"))


def test_recording_rule_unit_tests_pass(promtool):
    ok(run(promtool, "test", "rules", "tests/recording_test.yml"))


def test_alert_unit_tests_pass(promtool):
    ok(run(promtool, "test", "rules", "tests/alerts_test.yml"))


def test_every_alert_has_firing_and_quiet_cases():
    cases = [c for t in yaml.safe_load((PROM / "tests" / "alerts_test.yml").read_text())["tests"]
             for c in t.get("alert_rule_test", [])]
    alerts = alert_rules()
    assert set(alerts) == ALERT_NAMES
    for name in alerts:
        fires = [c for c in cases if c["alertname"] == name and c["exp_alerts"]]
        quiet = [c for c in cases if c["alertname"] == name and not c["exp_alerts"]]
        assert fires, f"{name}: no test case where it fires"
        assert len(quiet) >= 2, f"{name}: needs quiet cases (before `for:` elapses, and a look-alike)"


def test_every_alert_says_what_it_is_and_what_to_do():
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 100, name
        assert re.search(r"\b(check|look|add|raise|restart|see|compare)\b", rule["annotations"]["description"],
                         re.IGNORECASE), f"{name}: the description should say what to do"


def test_rules_read_only_metrics_the_worker_exports():
    rules = recording_rules()
    exprs = list(rules.values()) + [r["expr"] for r in alert_rules().values()]
    allowed = exported_metric_names() | PROMETHEUS_SYNTHETIC
    for expr in exprs:
        raw, unknown = resolve(promql_metric_names(expr), rules)
        assert not unknown and raw <= allowed, (expr, unknown, raw - allowed)


@pytest.mark.parametrize("mutation, expect", [
    # Without their `for:` clauses every alert fires in its "not yet" quiet case.
    (lambda s: re.sub(r"^        for: .*$", "        for: 0s", s, flags=re.MULTILINE), ALERT_NAMES),
    # Without the archival guard, the replay case of the latency alert fires.
    (lambda s: re.sub(r"\n\s*unless on \(job, reference\)\n.*> 86400", "", s), {"StampflowLatencyP99High"}),
    # A threshold moved the wrong way round fires in the 1% case.
    (lambda s: s.replace("ratio_rate5m{job=\"stampflow\"} > 0.05", "ratio_rate5m{job=\"stampflow\"} > 0.005"),
     {"StampflowDeadLetterRateHigh"}),
    # An out-of-distribution threshold below the expected few percent fires in the 3% case.
    (lambda s: s.replace("ratio_rate15m{job=\"stampflow\"} > 0.25", "ratio_rate15m{job=\"stampflow\"} > 0.025"),
     {"StampflowOutOfDistributionShareHigh"}),
], ids=["no-for", "no-archival-guard", "dead-letter-threshold", "ood-threshold"])
def test_alert_unit_tests_catch_a_weakened_rule(promtool, tmp_path, mutation, expect):
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    shutil.copytree(PROM / "tests", tmp_path / "tests")
    original = (tmp_path / "rules" / "alerts.yml").read_text()
    mutated = mutation(original)
    assert mutated != original, "the mutation no longer applies to alerts.yml; update this test"
    (tmp_path / "rules" / "alerts.yml").write_text(mutated)
    proc = run(promtool, "test", "rules", "tests/alerts_test.yml", cwd=tmp_path)
    assert proc.returncode != 0
    failed = set(re.findall(r"alertname: (\w+), time:", proc.stdout + proc.stderr))
    assert failed == expect
