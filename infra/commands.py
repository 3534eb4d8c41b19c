"""Shell scripts the program runs on the deployer's machine (pulumi-command's `local.Command`), where a
cloud API alone cannot do the right thing in one `pulumi up`: wait, bounded, for what takes time to
appear (an RBAC grant, an image the operator pushes), or read live state before writing it (a node
group's size, which its autoscaler owns).

Every script is POSIX sh, uses the cloud's own CLI (a prerequisite of the kubeconfigs anyway), never
waits without a bound, and ends with a message that says what to do. Logging is on, so the messages
reach `pulumi up`'s output while the script runs.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence


def quote(text: str) -> str:
    return shlex.quote(text)


def bounded_wait(check: str, waiting: str, failed: str, timeout_seconds: int, interval_seconds: int = 10) -> str:
    """Run `check` (a shell command whose success means ready) until it succeeds, at most
    `timeout_seconds`: say `waiting` once if the first try fails, and at the end `failed` with the last
    thing the check said (a missing CLI, a refused credential, a firewall), exit 1."""
    return "\n".join([
        "set -u",
        f"deadline=$(( $(date +%s) + {timeout_seconds} ))",
        "said=0",
        "while :; do",
        f"  if out=$({{ {check}; }} 2>&1); then break; fi",
        '  if [ "$(date +%s)" -ge "$deadline" ]; then',
        f"    printf '%s\\n' {quote(failed)} >&2",
        """    printf 'the last check said: %s\\n' "$(printf '%s' "$out" | tail -n 5)" >&2""",
        "    exit 1",
        "  fi",
        f'  if [ "$said" = 0 ]; then printf \'%s\\n\' {quote(waiting)}; said=1; fi',
        f"  sleep {interval_seconds}",
        "done",
    ])


def aws_cli(profile: str | None, role_arn: str | None, region: str) -> tuple[str, str]:
    """(preamble, `aws ... --region R`): the AWS CLI as the identity the AWS provider uses. An assumed role
    is assumed once by the preamble, whose exported credentials the later calls use."""
    base = "aws" + (f" --profile {quote(profile)}" if profile else "")
    preamble = ""
    if role_arn:
        preamble = "\n".join([
            f"creds=$({base} sts assume-role --role-arn {quote(role_arn)} --role-session-name servestack "
            "--query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text) || exit 1",
            # The role's credentials replace the profile's.
            'set -- $creds; export AWS_ACCESS_KEY_ID="$1" AWS_SECRET_ACCESS_KEY="$2" AWS_SESSION_TOKEN="$3"',
            "unset AWS_PROFILE",
        ])
        base = "aws"
    return preamble, f"{base} --region {quote(region)}"


def eks_scaling(cli: tuple[str, str], cluster: str, node_group: str, min_size: int, max_size: int) -> str:
    """Set a managed node group's bounds, keeping its desired size (the autoscaler's) unless the new bounds
    exclude it: EKS refuses a minimum above the desired size or a maximum below it, and the provider
    would send the desired size of its state, not the live one."""
    preamble, aws = cli
    group = f"--cluster-name {quote(cluster)} --nodegroup-name {quote(node_group)}"
    return "\n".join(line for line in [
        "set -eu",
        preamble,
        f"live=$({aws} eks describe-nodegroup {group} "
        "--query 'nodegroup.scalingConfig.[desiredSize,minSize,maxSize]' --output text)",
        "set -- $live",
        f'desired=$1; min={min_size}; max={max_size}',
        'if [ "$desired" -lt "$min" ]; then desired=$min; fi',
        'if [ "$desired" -gt "$max" ]; then desired=$max; fi',
        'if [ "$desired $min $max" = "$1 $2 $3" ]; then exit 0; fi',
        f'echo "{node_group}: minSize $2 -> $min, maxSize $3 -> $max, desiredSize $1 -> $desired"',
        f"{aws} eks update-nodegroup-config {group} "
        '--scaling-config "minSize=$min,maxSize=$max,desiredSize=$desired" >/dev/null',
        f"{aws} eks wait nodegroup-active {group}",
    ] if line)


def with_kubectl(kubeconfig_env: str | None, kubectl: str, body: Callable[[str], str]) -> str:
    """The script `body(kubectl)`, where kubectl uses the kubeconfig held in the environment variable
    `kubeconfig_env` (written to a temporary file, removed at exit), or is `kubectl` as given when None."""
    if kubeconfig_env is None:
        return body(kubectl)
    return "\n".join([
        'kc=$(mktemp)',
        'trap \'rm -f "$kc"\' EXIT',
        f'printf \'%s\' "${kubeconfig_env}" > "$kc"',
        body('kubectl --kubeconfig "$kc"'),
    ])


def kubernetes_access(kubeconfig_env: str, timeout_seconds: int, what: str) -> str:
    """Wait until the kubeconfig in the environment variable `kubeconfig_env` may create namespaces: a new
    cluster-admin grant that the API server learns of minutes later (Azure RBAC)."""
    return with_kubectl(kubeconfig_env, "kubectl", lambda kubectl: bounded_wait(
        f"{kubectl} auth can-i create namespaces --all-namespaces",
        waiting=f"waiting for {what} to reach the Kubernetes API server (it takes up to five minutes)",
        failed=f"{what} still cannot create namespaces after {timeout_seconds // 60} minutes; check the role "
               "assignment, then run `pulumi up` again",
        timeout_seconds=timeout_seconds))


def uploaded(check: str, what: str, steps: Sequence[str], timeout_seconds: int, setup: str = "") -> str:
    """Wait until the operator has uploaded `what` (the serving image, the model) into a store this stack
    creates, saying how: on the first `up` the store is new, and the upload can run while the cluster is
    being created."""
    how = "; ".join(steps)
    wait = bounded_wait(
        check,
        waiting=f"waiting for {what}; upload it now from another terminal: {how}",
        failed=f"{what} is still missing after {timeout_seconds // 60} minutes; upload it ({how}), then run "
               "`pulumi up` again",
        timeout_seconds=timeout_seconds)
    return f"{setup}\n{wait}" if setup else wait
