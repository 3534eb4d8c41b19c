"""The alert rules of infra/alerts.py: valid for Prometheus (`promtool check rules`), each firing and not firing
as its unit tests say (`promtool test rules` with tests/infra/alerts/*.yaml), each with its severity, summary,
description and runbook, and reading only metrics that exist.

promtool is Debian's (`prometheus` package, 2.42); `make promtool` installs it where it is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.alerts import alert_rules
from tests.infra.external_metrics import documented

FIXTURES = Path(__file__).with_name("alerts")
SLO = 2.0  # the TTFT SLO the fixtures are written for


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `make promtool` installs Debian's prometheus package")
    return path


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The rules rendered as a rule file, beside copies of the unit tests that load it as rules.yaml."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(alert_rules(SLO), sort_keys=False))
    for fixture in FIXTURES.glob("*.yaml"):
        shutil.copy(fixture, tmp_path / fixture.name)
    return tmp_path


def _rules() -> list[dict[str, Any]]:
    return [rule for group in alert_rules(SLO)["groups"] for rule in group["rules"]]


def test_the_rules_pass_promtool_check(promtool: str, rules_dir: Path) -> None:
    result = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=rules_dir, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_the_rules_pass_their_unit_tests(promtool: str, rules_dir: Path) -> None:
    fixtures = sorted(path.name for path in FIXTURES.glob("*.yaml"))
    assert fixtures == ["containers.yaml", "deployments.yaml", "serving.yaml"]
    result = subprocess.run([promtool, "test", "rules", *fixtures], cwd=rules_dir, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(fixtures)


def test_a_broken_expectation_fails_the_unit_tests(promtool: str, rules_dir: Path) -> None:
    """The unit tests can fail: the same fixture with the SLO raised above the observed p95 does."""
    (rules_dir / "rules.yaml").write_text(yaml.safe_dump(alert_rules(10.0), sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "serving.yaml"], cwd=rules_dir, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "alertname: ServestackTimeToFirstTokenOverSlo, time: 15m" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for fixture in FIXTURES.glob("*.yaml"):
        for case in yaml.safe_load(fixture.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert names == {"ServestackNoReadyPods", "ServestackHighErrorRatio", "ServestackTimeToFirstTokenOverSlo",
                     "ServestackQueueGrowingAtMaxReplicas", "ServestackPodPending", "ServestackRolloutStuck",
                     "ServestackContainerRestarting", "ServestackContainerOOMKilled", "ServestackGpuXidError"}
    assert firing == names
    assert silent == names


def test_every_alert_says_how_bad_what_and_where_to_look() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert all(text.strip() for text in rule["annotations"].values()), rule["alert"]


def test_the_slo_and_the_namespace_reach_the_rules() -> None:
    rules = {rule["alert"]: rule for group in alert_rules(0.75, namespace="llm")["groups"]
             for rule in group["rules"]}
    assert rules["ServestackTimeToFirstTokenOverSlo"]["expr"].endswith(") > 0.75")
    assert "0.75s SLO" in rules["ServestackTimeToFirstTokenOverSlo"]["annotations"]["summary"]
    for name, rule in rules.items():
        if name != "ServestackGpuXidError":  # GPUs are the cluster's, not a namespace's
            selectors = re.findall(r"\{([^}]*)\}", rule["expr"])
            assert selectors and all('namespace="llm"' in s for s in selectors), name


@pytest.mark.parametrize(("slo", "namespace", "message"), [
    (0.0, "servestack", "ttft_slo_seconds must be a positive number of seconds (got 0.0)"),
    (-1.0, "servestack", "ttft_slo_seconds must be a positive number of seconds (got -1.0)"),
    (2.0, "Serve_Stack", "namespace 'Serve_Stack' is not a Kubernetes namespace name (lower-case DNS label)"),
])
def test_bad_arguments_are_named(slo: float, namespace: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        alert_rules(slo, namespace=namespace)
    assert str(error.value) == message


def test_the_rules_read_only_metrics_that_exist() -> None:
    """Metrics of kube-state-metrics and the DCGM exporter as their docs list them; the server's own are
    checked against a real server's /metrics in tests/serving/test_prometheus.py."""
    names = {name for rule in _rules() for name in re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*[{\[])",
                                                               rule["expr"])}
    external = {name for name in names if not name.startswith("servestack_")}
    assert external and external <= documented()
    assert {name for name in names if name.startswith("servestack_")} == {
        "servestack_http_requests_total", "servestack_time_to_first_token_seconds_bucket",
        "servestack_num_requests_waiting"}
