"""`servestack preview|up|destroy|refresh|outputs` through the Automation API against a stand-in `pulumi`
(tests/servestack/pulumi_standin.py, first on PATH): the exact command lines, what is printed, and the stops
before Pulumi runs (no CLI, an old CLI, no backend login, no cloud credentials)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from servestack.cli import main
from servestack.driver import CLI_MINIMUM, INSTALL_URL, change_counts, missing_credentials
from servestack.offline.plan import ROOT
from tests.servestack.conftest import Pulumi

POLICIES = str(ROOT / "policies")
EVENT_LOG = re.compile(r"^tcp://127\.0\.0\.1:\d+$")


def _without_event_log(argv: list[str]) -> list[str]:
    i = argv.index("--event-log")
    assert EVENT_LOG.match(argv[i + 1]), argv[i + 1]
    return argv[:i] + argv[i + 2:]


def test_preview_runs_the_pack_with_the_stacks_policy_config(pulumi: Pulumi,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    pulumi.set_state(["aws-dev"])
    assert main(["preview", "--stack", "aws-dev"]) == 0
    argvs = pulumi.argvs()
    assert argvs[:2] == [["version"], ["--non-interactive", "stack", "select", "--stack", "aws-dev"]]
    assert len(argvs) == 3
    assert _without_event_log(argvs[2]) == [
        "--non-interactive", "preview", "--policy-pack", POLICIES,
        "--policy-pack-config", str(ROOT / "policies" / "config" / "aws-dev.json"),
        "--exec-kind", "auto.local", "--stack", "aws-dev"]
    for call in pulumi.calls()[1:]:
        assert call["cwd"] == str(ROOT)  # the workspace is the repository: Pulumi.yaml, stacks/
        assert call["env"]["PULUMI_AUTOMATION_API"] == "true"
    out = capsys.readouterr().out
    # the live view's resources and the pack's finding, then the summary of changes
    assert re.search(r"servestack\s+│\s+kubernetes:apps/v1:Deployment\s+│\s+create\s+│\s+done", out), out
    assert "policy world-ingress-allowlist [advisory] (servestack): the Service is public" in out, out
    assert re.search(r"create\s+│\s+2\b", out) and re.search(r"same\s+│\s+1\b", out), out


def test_preview_of_a_new_stack_creates_it_and_no_policies_leaves_the_pack_out(pulumi: Pulumi) -> None:
    pulumi.set_state([])
    assert main(["preview", "--stack", "aws-dev", "--no-policies"]) == 0
    argvs = pulumi.argvs()
    assert argvs[1:3] == [["--non-interactive", "stack", "select", "--stack", "aws-dev"],
                          ["--non-interactive", "stack", "init", "aws-dev"]]
    assert _without_event_log(argvs[3]) == ["--non-interactive", "preview", "--exec-kind", "auto.local",
                                            "--stack", "aws-dev"]


def test_up_applies_with_the_pack_reads_outputs_and_summary(pulumi: Pulumi, capsys: pytest.CaptureFixture[str]) -> None:
    pulumi.set_state(["aws-prod"])
    assert main(["up", "--stack", "aws-prod", "--no-verify"]) == 0
    argvs = pulumi.argvs()
    assert _without_event_log(argvs[2]) == [
        "--non-interactive", "up", "--yes", "--skip-preview", "--policy-pack", POLICIES,
        "--policy-pack-config", str(ROOT / "policies" / "config" / "aws-prod.json"),
        "--exec-kind", "auto.local", "--stack", "aws-prod"]
    assert argvs[3:] == [
        ["--non-interactive", "stack", "output", "--json", "--stack", "aws-prod"],
        ["--non-interactive", "stack", "output", "--json", "--show-secrets", "--stack", "aws-prod"],
        ["--non-interactive", "stack", "history", "--json", "--show-secrets", "--page-size", "1", "--page", "1",
         "--stack", "aws-prod"]]
    out = capsys.readouterr().out
    assert re.search(r"up aws-prod: changes", out) and re.search(r"create\s+│\s+2\b", out), out


@pytest.mark.parametrize(("verb", "argv", "summary"), [
    ("destroy", ["destroy", "--skip-preview", "--yes"], r"delete\s+│\s+3\b"),
    ("refresh", ["refresh", "--skip-preview", "--yes"], r"same\s+│\s+3\b"),
])
def test_destroy_and_refresh_command_lines(pulumi: Pulumi, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], verb: str, argv: list[str],
                                           summary: str) -> None:
    pulumi.set_state(["gcp-dev"])
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(pulumi.state))  # a key file that exists
    assert main([verb, "--stack", "gcp-dev", *(["--yes"] if verb == "destroy" else [])]) == 0
    argvs = pulumi.argvs()
    assert argvs[1] == ["--non-interactive", "stack", "select", "--stack", "gcp-dev"]  # never created
    assert _without_event_log(argvs[2]) == ["--non-interactive", *argv, "--exec-kind", "auto.local",
                                            "--stack", "gcp-dev"]
    assert argvs[3] == ["--non-interactive", "stack", "history", "--json", "--show-secrets", "--page-size", "1",
                        "--page", "1", "--stack", "gcp-dev"]
    assert re.search(summary, capsys.readouterr().out)


def test_destroy_needs_yes_and_a_missing_stack_is_not_created(pulumi: Pulumi,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    pulumi.set_state([])
    assert main(["destroy", "--stack", "aws-dev"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    assert pulumi.calls() == []
    assert main(["destroy", "--stack", "aws-dev", "--yes"]) == 2
    assert "stack aws-dev does not exist in the backend yet" in capsys.readouterr().err
    assert ["--non-interactive", "stack", "init", "aws-dev"] not in pulumi.argvs()


def test_outputs_masks_secrets_unless_shown_and_writes_a_private_file(pulumi: Pulumi, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pulumi.set_state(["aws-dev"], {"endpoint": {"value": "https://llm.example.com", "secret": False},
                                   "api_keys": {"value": {"web": "sk-web-1"}, "secret": True}})
    written = tmp_path / "out" / "outputs.json"
    assert main(["outputs", "--stack", "aws-dev", "--json", str(written)]) == 0
    out = capsys.readouterr().out
    assert '"https://llm.example.com"' in out and "[secret]" in out and "sk-web-1" not in out
    assert json.loads(written.read_text())["api_keys"] == {"value": {"web": "sk-web-1"}, "secret": True}
    assert written.stat().st_mode & 0o777 == 0o600
    assert pulumi.argvs()[2:] == [["--non-interactive", "stack", "output", "--json", "--stack", "aws-dev"],
                                  ["--non-interactive", "stack", "output", "--json", "--show-secrets", "--stack",
                                   "aws-dev"]]
    assert main(["outputs", "--stack", "aws-dev", "--show-secrets"]) == 0
    assert "sk-web-1" in capsys.readouterr().out


def test_a_failed_up_says_what_pulumi_said(pulumi: Pulumi, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    pulumi.set_state(["aws-dev"])
    monkeypatch.setenv("STANDIN_FAIL", "up")
    assert main(["up", "--stack", "aws-dev"]) == 1
    err = capsys.readouterr().err
    assert "`pulumi up` on stack aws-dev failed" in err and "creating Deployment: context deadline exceeded" in err


def test_without_the_cli_it_stops_at_once_saying_how_to_install_it(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing called pulumi there
    monkeypatch.setenv("AWS_PROFILE", "servestack-dev")
    assert main(["up", "--stack", "aws-dev"]) == 2
    err = capsys.readouterr().err
    assert "the Pulumi CLI is not installed" in err and INSTALL_URL in err
    assert f"Pulumi CLI >= {CLI_MINIMUM}" in err and CLI_MINIMUM == "3.272.0"  # the pin in requirements.txt


def test_an_older_cli_is_refused(pulumi: Pulumi, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STANDIN_VERSION", "v3.200.0")
    pulumi.set_state(["aws-dev"])
    assert main(["preview", "--stack", "aws-dev"]) == 2
    err = capsys.readouterr().err
    assert "Pulumi CLI >= 3.272.0" in err and "3.200.0" in err and INSTALL_URL in err
    assert pulumi.argvs() == [["version"]]


def test_missing_cloud_credentials_and_login_are_named_before_pulumi_runs(
        pulumi: Pulumi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.delenv("PULUMI_ACCESS_TOKEN")
    assert main(["up", "--stack", "aws-dev"]) == 2
    err = capsys.readouterr().err
    assert "cannot run `up` on stack aws-dev" in err
    assert "no Pulumi backend login: set PULUMI_ACCESS_TOKEN" in err and "`pulumi login`" in err
    assert "no AWS credentials: set AWS_PROFILE" in err and "AWS_ACCESS_KEY_ID" in err
    assert "(stack aws-dev is on aws)" in err
    assert pulumi.calls() == []  # Pulumi never ran


def test_outputs_need_the_backend_but_no_cloud_credentials(pulumi: Pulumi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_PROFILE")
    pulumi.set_state(["aws-dev"], {"endpoint": {"value": "https://llm.example.com", "secret": False}})
    assert main(["outputs", "--stack", "aws-dev"]) == 0


def test_a_pulumi_login_file_counts_as_a_backend_login(pulumi: Pulumi, home: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULUMI_ACCESS_TOKEN")
    (home / ".pulumi").mkdir()
    (home / ".pulumi" / "credentials.json").write_text(json.dumps({"current": "file://~", "accounts": {}}))
    pulumi.set_state(["aws-dev"])
    assert main(["preview", "--stack", "aws-dev"]) == 0


def test_each_clouds_missing_credentials(home: Path) -> None:
    gcp = missing_credentials("gcp", {}, {}, home)
    assert gcp is not None and "GOOGLE_APPLICATION_CREDENTIALS" in gcp
    assert "gcloud auth application-default login" in gcp
    assert str(home / ".config/gcloud/application_default_credentials.json") in gcp
    gone = missing_credentials("gcp", {}, {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/key.json"}, home)
    assert gone is not None and "/nonexistent/key.json, which does not exist" in gone
    azure = missing_credentials("azure", {}, {}, home)
    assert azure is not None and "`az login`" in azure and "ARM_CLIENT_ID" in azure and "ARM_CLIENT_SECRET" in azure
    local = missing_credentials("local", {"servestack:local": {"kubeContext": "kind-servestack"}}, {}, home)
    assert local is not None and str(home / ".kube/config") in local and "kind create cluster" in local

    (home / ".config" / "gcloud").mkdir(parents=True)
    (home / ".config" / "gcloud" / "application_default_credentials.json").write_text("{}")
    assert missing_credentials("gcp", {}, {}, home) is None
    assert missing_credentials("azure", {}, {"ARM_CLIENT_ID": "id", "ARM_CLIENT_SECRET": "s"}, home) is None
    (home / ".azure").mkdir()
    (home / ".azure" / "azureProfile.json").write_text("{}")
    assert missing_credentials("azure", {}, {}, home) is None
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text("[default]\n")
    assert missing_credentials("aws", {}, {}, home) is None

    (home / ".kube").mkdir()
    (home / ".kube" / "config").write_text("apiVersion: v1\ncontexts:\n- name: kind-other\n  context: {}\n")
    wrong = missing_credentials("local", {"servestack:local": {"kubeContext": "kind-servestack"}}, {}, home)
    assert wrong is not None and "no context 'kind-servestack'" in wrong and "kind-other" in wrong
    (home / ".kube" / "config").write_text("apiVersion: v1\ncontexts:\n- name: kind-servestack\n  context: {}\n")
    assert missing_credentials("local", {"servestack:local": {"kubeContext": "kind-servestack"}}, {}, home) is None


def test_an_unknown_stack_is_refused_before_pulumi_runs(pulumi: Pulumi, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", "--stack", "nope"]) == 2
    assert "unknown stack 'nope'" in capsys.readouterr().err
    assert pulumi.calls() == []


def test_a_backend_that_refuses_the_login_is_reported(pulumi: Pulumi, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STANDIN_FAIL", "stack select")
    pulumi.set_state(["aws-dev"])
    assert main(["preview", "--stack", "aws-dev"]) == 1
    err = capsys.readouterr().err
    assert "selecting stack aws-dev failed" in err and "error: [401] Unauthorized: invalid access token" in err


def test_a_replacement_is_counted_once() -> None:
    assert change_counts({"create-replacement": 1, "delete-replaced": 1, "replace": 1, "same": 4}) == {
        "replace": 1, "same": 4}
