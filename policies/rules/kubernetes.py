"""Kubernetes workloads and services: every workload kind, its containers, init and ephemeral containers.

A field the pod does not set is read as Kubernetes' default: `allowPrivilegeEscalation` unset means
escalation is allowed, a missing seccomp profile means Unconfined on most nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule
from reading import values as v
from reading.load_balancers import internal_load_balancer
from reading.resources import Resource
from reading.values import BadValue, Unknown

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:core/v1:ReplicationController": ("spec", "template", "spec"),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
# Server-side-apply patches of the same kinds (pulumi-kubernetes' DeploymentPatch, ...) change live objects:
# what a patch sets counts, what it leaves out is the live object's business.
PATCHES = {f"{kind}Patch": path for kind, path in POD_SPEC_PATHS.items()}
POD_SPEC_PATHS.update(PATCHES)
WORKLOADS = frozenset(POD_SPEC_PATHS)
FULL_WORKLOADS = WORKLOADS - frozenset(PATCHES)
SERVICE = "kubernetes:core/v1:Service"
SERVICE_PATCH = "kubernetes:core/v1:ServicePatch"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
def pod_spec(resource: Resource) -> tuple[str, Any]:
    path = POD_SPEC_PATHS[resource.type]
    return ".".join(path), v.dig(resource.props, *path)


def containers(spec_path: str, spec: dict[str, Any], judge: Judge) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in CONTAINER_LISTS:
        items = v.as_list(spec.get(key))
        if isinstance(items, Unknown):
            judge.unknown_value(items, f"{spec_path}.{key}")
            continue
        for i, c in enumerate(items):
            where = f"{spec_path}.{key}[{i}]" + (f" ({c['name']})" if isinstance(c, dict)
                                                 and isinstance(c.get("name"), str) else "")
            if isinstance(c, Unknown):
                judge.unknown_value(c, where)
            elif isinstance(c, dict):
                yield where, c


def _pod(resource: Resource, judge: Judge) -> tuple[str, dict[str, Any]] | None:
    path, spec = pod_spec(resource)
    if isinstance(spec, Unknown):
        judge.unknown_value(spec, path)
        return None
    return (path, spec) if isinstance(spec, dict) else None


def _is(value: Any, want: bool, what: str, judge: Judge) -> bool:
    """Whether a boolean field is `want`; an unknown one is noted and counts as not."""
    if isinstance(value, Unknown):
        judge.unknown_value(value, what)
        return False
    return value is not None and v.truthy(value) is want


def check_privileged(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    pod = _pod(resource, judge)
    if pod is None:
        return
    for where, c in containers(*pod, judge):
        ctx = c.get("securityContext") or {}
        if isinstance(ctx, Unknown):
            judge.unknown_value(ctx, f"{where}.securityContext")
            continue
        if _is(ctx.get("privileged"), True, f"{where}.securityContext.privileged", judge):
            judge.violation(f"{where} runs privileged (securityContext.privileged=true): it has every "
                            "capability and the host's devices. Remove it; GPUs reach pods through the "
                            "device plugin's nvidia.com/gpu resource.")
        added = v.as_list(v.dig(ctx, "capabilities", "add"))
        if isinstance(added, Unknown):
            judge.unknown_value(added, f"{where}.securityContext.capabilities.add")
        else:
            # containerd accepts "CAP_SYS_ADMIN" as well as "SYS_ADMIN", in any case
            strong = sorted({str(a).strip().upper().removeprefix("CAP_") for a in added} & {"ALL", "SYS_ADMIN"})
            if strong:
                judge.violation(f"{where} adds capability {', '.join(strong)}, which is as good as "
                                "privileged. Remove it.")


def check_host_namespaces(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    pod = _pod(resource, judge)
    if pod is None:
        return
    path, spec = pod
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if _is(spec.get(key), True, f"{path}.{key}", judge):
            judge.violation(f"{path}.{key} is true: the pod shares the node's {key[4:]} namespace. "
                            "Remove it.")


def check_host_ports(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    pod = _pod(resource, judge)
    if pod is None:
        return
    for where, c in containers(*pod, judge):
        ports = v.as_list(c.get("ports"))
        if isinstance(ports, Unknown):
            judge.unknown_value(ports, f"{where}.ports")
            continue
        for i, port in enumerate(ports):
            host = port.get("hostPort") if isinstance(port, dict) else None
            if isinstance(host, Unknown):
                judge.unknown_value(host, f"{where}.ports[{i}].hostPort")
                continue
            try:
                number = v.port_number(host) if host is not None else 0
            except BadValue as e:
                judge.unknown(f"{where}.ports[{i}].hostPort: {e}")
                continue
            if number:
                judge.violation(f"{where}.ports[{i}].hostPort={number} binds the node's port. Expose the pod "
                                "through a Service instead.")


def check_privilege_escalation(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    pod = _pod(resource, judge)
    if pod is None:
        return
    for where, c in containers(*pod, judge):
        value = v.dig(c, "securityContext", "allowPrivilegeEscalation")
        if isinstance(value, Unknown):
            judge.unknown_value(value, f"{where}.securityContext.allowPrivilegeEscalation")
        elif value is None and resource.type in PATCHES:
            continue  # a patch that leaves it out keeps the live object's value
        elif value is None or v.truthy(value) is not False:
            shown = "unset (Kubernetes then allows it)" if value is None else repr(value)
            judge.violation(f"{where}.securityContext.allowPrivilegeEscalation is {shown}. Set it to false.")


def check_hardening(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    pod = _pod(resource, judge)
    if pod is None:
        return
    path, spec = pod
    pod_ctx = v.as_dict(spec.get("securityContext"))
    for where, c in containers(path, spec, judge):
        ctx = v.as_dict(c.get("securityContext"))
        missing = []
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if isinstance(non_root, Unknown) or isinstance(user, Unknown):
            judge.unknown(f"{where}: runAsNonRoot/runAsUser unknown during preview")
        elif not (v.truthy(non_root) is True and user not in (0, 0.0, "0")):
            missing.append("runAsNonRoot: true")
        if not _is(ctx.get("readOnlyRootFilesystem"), True, f"{where}.securityContext.readOnlyRootFilesystem",
                   judge):
            missing.append("readOnlyRootFilesystem: true")
        drop = v.as_list(v.dig(ctx, "capabilities", "drop"))
        if isinstance(drop, Unknown):
            judge.unknown_value(drop, f"{where}.securityContext.capabilities.drop")
        elif "ALL" not in {str(d).upper() for d in drop}:
            missing.append("capabilities.drop: [ALL]")
        seccomp = v.dig(ctx, "seccompProfile", "type") or v.dig(pod_ctx, "seccompProfile", "type")
        if isinstance(seccomp, Unknown):
            judge.unknown_value(seccomp, f"{where}: seccompProfile.type")
        elif str(seccomp) not in ("RuntimeDefault", "Localhost"):
            missing.append("seccompProfile.type: RuntimeDefault")
        if missing:
            judge.violation(f"{where} lacks {', '.join(missing)} in its securityContext (or the pod's).")


def check_image_pinned(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    pod = _pod(resource, judge)
    if pod is None:
        return
    for where, c in containers(*pod, judge):
        image = c.get("image")
        if isinstance(image, Unknown):
            judge.unknown_value(image, f"{where}.image")
            continue
        if not isinstance(image, str):
            continue
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else None
        if tag is None or tag == "latest":
            judge.violation(f"{where}.image {image!r} is not pinned (no tag, or :latest). Pin a version tag "
                            "or, better, a @sha256 digest.")


def check_load_balancer(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    spec = resource.props.get("spec")
    if isinstance(spec, Unknown):
        judge.unknown_value(spec, "spec")
        return
    spec = spec if isinstance(spec, dict) else {}
    kind = spec.get("type")
    if isinstance(kind, Unknown):
        judge.unknown_value(kind, "spec.type")
        return
    patch = resource.type == SERVICE_PATCH
    if kind != "LoadBalancer" and not (patch and kind is None):
        return
    annotations = v.dig(resource.props, "metadata", "annotations")
    if isinstance(annotations, Unknown):
        judge.unknown_value(annotations, "metadata.annotations")
        return
    annotations = annotations if isinstance(annotations, dict) else {}
    if internal_load_balancer(annotations, spec):
        return
    ranges = spec.get("loadBalancerSourceRanges")
    where = "spec.loadBalancerSourceRanges"
    if not ranges and isinstance(annotations.get(SOURCE_RANGES_ANNOTATION), str):
        ranges = [r for r in annotations[SOURCE_RANGES_ANNOTATION].split(",") if r.strip()]
        where = f"annotation {SOURCE_RANGES_ANNOTATION}"
    items = v.as_list(ranges)
    if isinstance(items, Unknown):
        judge.unknown_value(items, where)
        return
    if patch and (kind is None or not items):
        # A patch keeps what it leaves out: the live service's type, ranges or internal annotation.
        try:
            world_ranges = bool(items) and v.world_sources(items) is True
        except BadValue as e:
            judge.unknown(f"{where}: {e}")
            return
        if kind is not None or world_ranges:
            judge.unknown("this patch sets " + (f"{where} to the whole internet" if kind is None else
                          "type LoadBalancer without source ranges or an internal annotation") +
                          ", and what the live service keeps is not known to the policy")
        return
    if not items:
        judge.violation("a public LoadBalancer with no loadBalancerSourceRanges admits the whole internet. "
                        "Make it internal (the cloud's internal-LB annotation) or list client CIDRs.")
        return
    try:
        world = v.world_sources(items)
    except BadValue as e:
        judge.unknown(f"{where}: {e}")
        return
    if world is True:
        judge.violation(f"{where} {items} admits the whole internet. List the clients' CIDR blocks, or make "
                        "the load balancer internal.")
    elif isinstance(world, Unknown):
        judge.unknown_value(world, where)


_MANDATORY = dict(enforcement=EnforcementLevel.MANDATORY, types=WORKLOADS)

KUBERNETES_RULES = [
    Rule(
        name="k8s-no-privileged",
        description="No container runs privileged or adds the ALL or SYS_ADMIN capability.",
        severity=Severity.CRITICAL,
        remediation="Remove securityContext.privileged and the added capabilities. If a GPU driver or "
                    "device-plugin namespace truly needs them, exempt that namespace with a reason.",
        check=check_privileged,
        **_MANDATORY,  # type: ignore[arg-type]
    ),
    Rule(
        name="k8s-no-host-namespaces",
        description="No pod shares the node's network, PID or IPC namespace.",
        severity=Severity.HIGH,
        remediation="Remove hostNetwork, hostPID and hostIPC from the pod spec.",
        check=check_host_namespaces,
        **_MANDATORY,  # type: ignore[arg-type]
    ),
    Rule(
        name="k8s-no-host-ports",
        description="No container binds a port on the node (hostPort).",
        severity=Severity.HIGH,
        remediation="Remove hostPort; expose the pod through a Service.",
        check=check_host_ports,
        **_MANDATORY,  # type: ignore[arg-type]
    ),
    Rule(
        name="k8s-no-privilege-escalation",
        description="Every container sets allowPrivilegeEscalation to false (unset means allowed).",
        severity=Severity.HIGH,
        remediation="Set securityContext.allowPrivilegeEscalation: false on every container, init "
                    "containers included.",
        check=check_privilege_escalation,
        **_MANDATORY,  # type: ignore[arg-type]
    ),
    Rule(
        name="k8s-hardened-containers",
        description="Containers run as non-root with a read-only root filesystem, drop ALL capabilities "
                    "and use the RuntimeDefault seccomp profile.",
        severity=Severity.MEDIUM,
        enforcement=EnforcementLevel.ADVISORY,
        remediation="Set runAsNonRoot: true, readOnlyRootFilesystem: true, capabilities.drop: [ALL] and "
                    "seccompProfile.type: RuntimeDefault (on the container or the pod).",
        types=FULL_WORKLOADS,
        check=check_hardening,
    ),
    Rule(
        name="k8s-image-pinned",
        description="Container images are pinned by digest or by a version tag other than latest.",
        severity=Severity.LOW,
        enforcement=EnforcementLevel.ADVISORY,
        remediation="Reference images as repo:1.2.3 or, better, repo@sha256:<digest>.",
        types=WORKLOADS,
        check=check_image_pinned,
    ),
    Rule(
        name="k8s-loadbalancer-restricted",
        description="A LoadBalancer Service is internal or admits only listed, non-world source ranges.",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Set spec.loadBalancerSourceRanges to the clients' CIDR blocks, or annotate the service "
                    "as an internal load balancer for its cloud.",
        types=frozenset({SERVICE, SERVICE_PATCH}),
        check=check_load_balancer,
    ),
]
