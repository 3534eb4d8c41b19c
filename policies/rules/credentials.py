"""Cloud credentials written into Kubernetes objects as plain text.

Where: Secrets' `stringData` and `data` (base64, decoded here), ConfigMaps' `data` and `binaryData`, the
`env` values, `command` and `args` of every container of every workload kind, and Helm values (v3 Release,
v4 Chart), with their patches and the list kinds of Secrets and ConfigMaps.

What: by content, an AWS access key id (AKIA..., ASIA...) or a secret key in an AWS credentials file, a GCP
service account key (JSON with type service_account and a private_key), an Azure storage or Service Bus
connection string with AccountKey or SharedAccessKey, a SAS token, an Entra ID client secret (the
xxx8Q~... form); by name, a value under a cloud credential's variable name (AWS_SECRET_ACCESS_KEY,
AZURE_CLIENT_SECRET, GOOGLE_CREDENTIALS, a Helm value secretAccessKey, ...) in any case and spelling.

A value unknown during preview under a credential's name is "cannot verify" in a Secret (it may be a key
the stack creates, such as an IAM access key) and a violation in a container's env, where it is written into
the pod spec whatever it turns out to be. A TLS private key, a password and the servestack API key are not
cloud credentials.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule
from policies.rules.kubernetes import WORKLOADS, containers, pod_spec
from reading import values as v
from reading.resources import Resource
from reading.values import Unknown


def _kinds(name: str) -> frozenset[str]:
    return frozenset(f"kubernetes:core/v1:{name}{suffix}" for suffix in ("", "Patch", "List"))


SECRETS = _kinds("Secret")
CONFIG_MAPS = _kinds("ConfigMap")
HELM = frozenset({"kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart"})

# Names of the variables and settings that hold cloud secrets, compared without case and separators:
# AWS_SECRET_ACCESS_KEY, awsSecretAccessKey and secret-access-key all end in "secretaccesskey".
SECRET_NAME_ENDINGS = ("secretaccesskey", "awssessiontoken", "azureclientsecret", "armclientsecret",
                       "azurestoragekey", "storageaccountkey", "azurestorageaccesskey", "armaccesskey",
                       "azurestorageconnectionstring", "azurestoragesastoken", "googlecredentials",
                       "applicationcredentialsjson", "cloudkeyfilejson", "serviceaccountkeyjson")
_AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")
_AWS_SECRET_IN_FILE = re.compile(r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+=]{40}", re.IGNORECASE)
_AZURE_KEY = re.compile(r"(?:AccountKey|SharedAccessKey)\s*=\s*[A-Za-z0-9+/]{20,}={0,2}", re.IGNORECASE)
_SAS = re.compile(r"(?:^|[?&;])sig=[A-Za-z0-9%+/=]{20,}", re.IGNORECASE)
_SAS_VERSION = re.compile(r"(?:^|[?&;])sv=\d{4}-\d{2}-\d{2}", re.IGNORECASE)
_ENTRA_SECRET = re.compile(r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])")
_GCP_KEY = re.compile(r"\"type\"\s*:\s*\"service_account\"", re.IGNORECASE)


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def credential_name(name: str) -> bool:
    return _normal(name).endswith(SECRET_NAME_ENDINGS)


def credential_in(text: str) -> str | None:
    """What cloud credential a text holds, or None."""
    if _AWS_KEY_ID.search(text):
        return "an AWS access key id"
    if _AWS_SECRET_IN_FILE.search(text):
        return "an AWS secret access key"
    if _GCP_KEY.search(text) and "private_key" in text:
        return "a GCP service account key"
    if _AZURE_KEY.search(text):
        return "an Azure account or shared access key"
    if _SAS.search(text) and _SAS_VERSION.search(text):
        return "an Azure SAS token"
    if _ENTRA_SECRET.search(text):
        return "an Entra ID client secret"
    return None


def _decoded(value: str) -> str | None:
    try:
        return base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _entries(values: Any, encoded: bool) -> Iterator[tuple[str, Any]]:
    for key, value in (values.items() if isinstance(values, dict) else ()):
        if encoded and isinstance(value, str):
            decoded = _decoded(value)
            yield key, decoded if decoded is not None else value
        else:
            yield key, value


def _judge_value(where: str, name: str, value: Any, judge: Judge, in_pod_spec: bool, fix: str) -> None:
    if isinstance(value, Unknown):
        if credential_name(name):
            if in_pod_spec:
                judge.violation(f"{where} names a cloud secret and its value (unknown until the update runs) is "
                                f"written into the pod spec, readable by anyone who can read the workload. {fix}")
            else:
                judge.unknown(f"{where} names a cloud secret and {value}; if it is a long-lived key, {fix}")
        return
    if not isinstance(value, str) or not value.strip():
        return
    found = credential_in(value)
    if found is None and credential_name(name):
        found = "a cloud secret (by its name)"
    if found is not None:
        judge.violation(f"{where} holds {found} in plain text. {fix}")


WORKLOAD_IDENTITY = ("Use the cloud's workload identity (IRSA or EKS Pod Identity, GKE Workload Identity, AKS "
                     "workload identity) instead of keys")
SECRET_FIX = f"{WORKLOAD_IDENTITY}, or bring the key from a secret store (External Secrets, the CSI driver)."
ENV_FIX = f"{WORKLOAD_IDENTITY}, or read it with valueFrom.secretKeyRef."


def _object(where: str, obj: Any, config_map: bool, judge: Judge) -> None:
    if isinstance(obj, Unknown):
        judge.unknown_value(obj, where.strip() or "the object")
        return
    if not isinstance(obj, dict):
        return
    fields = (("data", False), ("binaryData", True)) if config_map else (("stringData", False), ("data", True))
    for key, encoded in fields:
        values = obj.get(key)
        if isinstance(values, Unknown):
            judge.unknown_value(values, f"{where}{key}")
            continue
        for name, value in _entries(values, encoded):
            _judge_value(f"{where}{key}.{name}", name, value, judge, False, SECRET_FIX)


def _walk(where: str, value: Any, judge: Judge, name: str = "") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _walk(f"{where}.{key}", item, judge, str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(f"{where}[{i}]", item, judge, name)
    else:
        _judge_value(where, name, value, judge, False, SECRET_FIX)


def _workload(resource: Resource, judge: Judge) -> None:
    path, spec = pod_spec(resource)
    if isinstance(spec, Unknown):
        judge.unknown_value(spec, path)
        return
    if not isinstance(spec, dict):
        return
    for where, c in containers(path, spec, judge):
        env = c.get("env")
        if isinstance(env, Unknown):
            judge.unknown_value(env, f"{where}.env")
        for i, entry in enumerate(v.items(env) if not isinstance(env, Unknown) else []):
            if isinstance(entry, Unknown):
                judge.unknown_value(entry, f"{where}.env[{i}]")
            elif isinstance(entry, dict) and "valueFrom" not in entry:
                name = str(entry.get("name") or "")
                _judge_value(f"{where}.env[{i}] ({name})", name, entry.get("value"), judge, True, ENV_FIX)
        for key in ("command", "args"):
            for i, arg in enumerate(v.items(c.get(key))):
                if isinstance(arg, str) and (found := credential_in(arg)) is not None:
                    judge.violation(f"{where}.{key}[{i}] holds {found} in plain text. {ENV_FIX}")


def check_plaintext_credentials(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    t, p = resource.type, resource.props
    if t in SECRETS or t in CONFIG_MAPS:
        if t.endswith("List"):
            for i, item in enumerate(v.items(p.get("items"))):
                _object(f"items[{i}] ", item, t in CONFIG_MAPS, judge)
        else:
            _object("", p, t in CONFIG_MAPS, judge)
    elif t in HELM:
        values = p.get("values")
        if isinstance(values, Unknown):
            judge.unknown_value(values, "values")
        else:
            _walk("values", values, judge)
    else:
        _workload(resource, judge)


CREDENTIAL_RULES = [
    Rule(
        name="k8s-no-plaintext-cloud-credentials",
        description="No AWS, GCP or Azure credential is written as plain text into a Secret's stringData or "
                    "data, a ConfigMap, a container's env, command or args, or Helm values.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Give the workload its cloud identity (IRSA/Pod Identity, GKE Workload Identity, AKS workload "
                    "identity); where a key is unavoidable, sync it from a secret store instead of the program.",
        types=frozenset({*SECRETS, *CONFIG_MAPS, *HELM, *WORKLOADS}),
        check=check_plaintext_credentials,
    ),
]
