"""The deployer-side scripts (infra/commands.py), run for real with /bin/sh against stand-in CLIs that keep
state and answer as the clouds do."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from infra import commands

# A stand-in `aws` CLI: one EKS node group whose scaling config lives in a JSON file, validated as EKS does.
FAKE_AWS = """#!{python}
import json, sys
state_file, log_file = {state!r}, {log!r}
args = sys.argv[1:]
with open(log_file, "a") as log:
    log.write(" ".join(args) + "\\n")
state = json.load(open(state_file))
if "describe-nodegroup" in args:
    s = state["scalingConfig"]
    print(f"{{s['desiredSize']}}\\t{{s['minSize']}}\\t{{s['maxSize']}}")
elif "update-nodegroup-config" in args:
    pairs = dict(p.split("=") for p in args[args.index("--scaling-config") + 1].split(","))
    new = {{**state["scalingConfig"], **{{k: int(v) for k, v in pairs.items()}}}}
    if new["minSize"] > new["desiredSize"]:
        sys.exit(f"InvalidParameterException: Minimum capacity {{new['minSize']}} can't be greater than desired "
                 f"size {{new['desiredSize']}}")
    if new["desiredSize"] > new["maxSize"]:
        sys.exit(f"InvalidParameterException: Desired capacity {{new['desiredSize']}} can't be greater than max "
                 f"size {{new['maxSize']}}")
    state["scalingConfig"] = new
    json.dump(state, open(state_file, "w"))
    print("{{}}")
elif "wait" in args:
    pass
elif "assume-role" in args:
    print("AKIA\\tSECRET\\tTOKEN")
else:
    sys.exit("unexpected call: " + " ".join(args))
"""


def _tool(directory: Path, name: str, text: str) -> None:
    path = directory / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run(script: str, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env})


@pytest.fixture
def eks(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(bin dir, state file, call log) of a node group at desired 2, min 1, max 4."""
    state, log = tmp_path / "nodegroup.json", tmp_path / "calls.log"
    state.write_text(json.dumps({"scalingConfig": {"desiredSize": 2, "minSize": 1, "maxSize": 4}}))
    log.write_text("")
    _tool(tmp_path, "aws", FAKE_AWS.format(python=sys.executable, state=str(state), log=str(log)))
    return tmp_path, state, log


CLI = commands.aws_cli(None, None, "us-east-1")


def _scaling(state: Path) -> dict[str, int]:
    config: dict[str, int] = json.loads(state.read_text())["scalingConfig"]
    return config


def test_raising_the_minimum_above_the_desired_size_raises_the_desired_size(eks: tuple[Path, Path, Path]) -> None:
    bin_dir, state, _log = eks
    result = _run(commands.eks_scaling(CLI, "c", "gpu", min_size=3, max_size=8), bin_dir)
    assert result.returncode == 0, result.stderr
    assert _scaling(state) == {"desiredSize": 3, "minSize": 3, "maxSize": 8}
    assert "gpu: minSize 1 -> 3, maxSize 4 -> 8, desiredSize 2 -> 3" in result.stdout


def test_lowering_the_maximum_below_the_desired_size_lowers_the_desired_size(eks: tuple[Path, Path, Path]) -> None:
    bin_dir, state, _ = eks
    assert _run(commands.eks_scaling(CLI, "c", "gpu", min_size=0, max_size=1), bin_dir).returncode == 0
    assert _scaling(state) == {"desiredSize": 1, "minSize": 0, "maxSize": 1}


def test_bounds_around_the_autoscalers_choice_keep_it(eks: tuple[Path, Path, Path]) -> None:
    bin_dir, state, log = eks
    assert _run(commands.eks_scaling(CLI, "c", "gpu", min_size=0, max_size=6), bin_dir).returncode == 0
    assert _scaling(state) == {"desiredSize": 2, "minSize": 0, "maxSize": 6}
    # Unchanged bounds: nothing is sent at all.
    log.write_text("")
    assert _run(commands.eks_scaling(CLI, "c", "gpu", min_size=0, max_size=6), bin_dir).returncode == 0
    assert "update-nodegroup-config" not in log.read_text()


def test_what_the_provider_would_send_is_refused(eks: tuple[Path, Path, Path]) -> None:
    """Why the bounds are not left to the node group resource: with the desired size ignored, it sends the
    desired size of its state with the new minimum, and EKS refuses."""
    bin_dir, _state, _ = eks
    result = _run("aws eks update-nodegroup-config --scaling-config minSize=3,maxSize=8,desiredSize=2", bin_dir)
    assert result.returncode != 0
    assert "Minimum capacity 3 can't be greater than desired size 2" in result.stderr


def test_an_assumed_role_is_assumed_once_and_used_for_every_call(eks: tuple[Path, Path, Path]) -> None:
    bin_dir, _state, log = eks
    cli = commands.aws_cli("platform", "arn:aws:iam::123456789012:role/deployer", "eu-west-1")
    assert _run(commands.eks_scaling(cli, "c", "gpu", min_size=3, max_size=4), bin_dir).returncode == 0
    calls = log.read_text().splitlines()
    assert calls[0].startswith("--profile platform sts assume-role --role-arn arn:aws:iam::123456789012:role/deployer")
    assert all(call.startswith("--region eu-west-1 eks ") for call in calls[1:])


def test_a_bounded_wait_returns_as_soon_as_the_check_passes(tmp_path: Path) -> None:
    counter = tmp_path / "tries"
    counter.write_text("0")
    # Succeeds on the third try.
    _tool(tmp_path, "ready", f"#!/bin/sh\nn=$(( $(cat {counter}) + 1 )); echo $n > {counter}; [ $n -ge 3 ]\n")
    script = commands.bounded_wait("ready", waiting="waiting for it", failed="never came", timeout_seconds=30,
                                   interval_seconds=0)
    result = _run(script, tmp_path)
    assert result.returncode == 0
    assert counter.read_text().strip() == "3"
    assert result.stdout.count("waiting for it") == 1 and "never came" not in result.stderr


def test_a_bounded_wait_ends_with_what_to_do_and_what_the_check_last_said(tmp_path: Path) -> None:
    check = "echo 'An error occurred (RepositoryNotFoundException)' >&2; false"
    script = commands.uploaded(check, "the serving image x:1", ["docker push x:1"], timeout_seconds=1,
                               setup="echo credentials")
    result = _run(script, tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "credentials"
    assert "waiting for the serving image x:1; upload it now from another terminal: docker push x:1" in result.stdout
    assert ("the serving image x:1 is still missing after 0 minutes; upload it (docker push x:1), then run "
            "`pulumi up` again") in result.stderr
    # A wrong credential or a firewall is not mistaken for a missing upload: its words reach the operator.
    assert "the last check said: An error occurred (RepositoryNotFoundException)" in result.stderr


def test_the_access_wait_reads_the_kubeconfig_it_is_given(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    # A kubectl that says yes once it has been asked twice, and records the kubeconfig it was handed.
    _tool(tmp_path, "kubectl", f"#!/bin/sh\ncat \"$2\" > {seen}\necho x >> {seen}.n\n"
                               f"[ $(wc -l < {seen}.n) -ge 2 ]\n")
    script = commands.kubernetes_access("KUBECONFIG_DATA", timeout_seconds=30, what="the grant")
    result = _run(script.replace("sleep 10", "sleep 0"), tmp_path, KUBECONFIG_DATA="apiVersion: v1\nkind: Config")
    assert result.returncode == 0, result.stderr
    assert seen.read_text() == "apiVersion: v1\nkind: Config"
    assert "waiting for the grant to reach the Kubernetes API server" in result.stdout
