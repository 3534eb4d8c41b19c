"""Hostile credential cases: cloud keys in Secrets (plain and base64), ConfigMaps, container env, args and Helm
values, under their own names or others, in patches and lists; and the look-alikes that must pass (a TLS key,
the serving API key, a key read from a Secret, a credentials file path)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from tests.policies.harness import Case, assert_case

RULE = "k8s-no-plaintext-cloud-credentials"
SECRET, CONFIG_MAP = "kubernetes:core/v1:Secret", "kubernetes:core/v1:ConfigMap"
DEPLOYMENT, HELM = "kubernetes:apps/v1:Deployment", "kubernetes:helm.sh/v3:Release"
# Made-up keys in the shapes the clouds issue (AWS's documentation example key pair among them).
AWS_KEY_ID, AWS_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GCP_KEY = json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "1",
                      "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n",
                      "client_email": "ci@p.iam.gserviceaccount.com"})
STORAGE_CONNECTION = ("DefaultEndpointsProtocol=https;AccountName=models;"
                      "AccountKey=bm90LWEtcmVhbC1rZXktYnV0LWxvbmctZW5vdWdoLXRvLWxvb2stbGlrZS1vbmU=;"
                      "EndpointSuffix=core.windows.net")
SAS = "?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig=Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4MTIzNA%3D"
ENTRA_SECRET = "Abc8Q~Zx1yW2vU3tS4rQ5pO6nM7lK8jI9hG0fE1d"
TLS_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(field: str = "stringData", **values: Any) -> dict[str, Any]:
    return {"metadata": {"name": "creds", "namespace": "servestack"}, "type": "Opaque", field: values}


def workload(*env: dict[str, Any], **container: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "registry.example/app:1.2.3", "env": list(env), **container}]}}}}


CASES = [
    Case("secret-aws-key-pair", RULE, SECRET,
         secret(AWS_ACCESS_KEY_ID=AWS_KEY_ID, AWS_SECRET_ACCESS_KEY=AWS_SECRET), "violation", "AWS access key id"),
    Case("secret-aws-key-under-another-name", RULE, SECRET, secret(token=f"id={AWS_KEY_ID}"), "violation"),
    Case("secret-aws-credentials-file", RULE, SECRET,
         secret(credentials=f"[default]\naws_access_key_id = x\naws_secret_access_key = {AWS_SECRET}\n"),
         "violation", "AWS secret access key"),
    Case("secret-data-base64-aws-key", RULE, SECRET, secret("data", key=b64(AWS_KEY_ID)), "violation", "data.key"),
    Case("secret-gcp-service-account-json", RULE, SECRET, secret(**{"key.json": GCP_KEY}), "violation",
         "GCP service account key"),
    Case("secret-data-base64-gcp-key", RULE, SECRET, secret("data", **{"sa.json": b64(GCP_KEY)}), "violation"),
    Case("secret-azure-connection-string", RULE, SECRET, secret(connection=STORAGE_CONNECTION), "violation",
         "Azure account or shared access key"),
    Case("secret-service-bus-shared-access-key", RULE, SECRET,
         secret(bus="Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;"
                    "SharedAccessKey=c2hhcmVkLWFjY2Vzcy1rZXktZXhhbXBsZQ=="), "violation"),
    Case("secret-sas-token", RULE, SECRET, secret(sas=SAS), "violation", "SAS token"),
    Case("secret-entra-client-secret-by-shape", RULE, SECRET, secret(password=ENTRA_SECRET), "violation",
         "Entra ID client secret"),
    Case("secret-azure-client-secret-by-name", RULE, SECRET, secret(AZURE_CLIENT_SECRET="not-the-usual-shape"),
         "violation", "by its name"),
    Case("secret-name-in-other-spelling", RULE, SECRET, secret(**{"aws-secret-access-key": "x" * 40}), "violation"),
    Case("secret-patch", RULE, "kubernetes:core/v1:SecretPatch", secret(AWS_SECRET_ACCESS_KEY=AWS_SECRET), "violation"),
    Case("secret-list-item", RULE, "kubernetes:core/v1:SecretList",
         {"items": [secret(ok="fine"), secret(AWS_ACCESS_KEY_ID=AWS_KEY_ID)]}, "violation", "items[1]"),
    Case("config-map-aws-key", RULE, CONFIG_MAP, {"data": {"AWS_ACCESS_KEY_ID": AWS_KEY_ID}}, "violation"),
    Case("config-map-binary-gcp-key", RULE, "kubernetes:core/v1:ConfigMapPatch",
         {"binaryData": {"key.json": b64(GCP_KEY)}}, "violation"),
    Case("env-aws-secret", RULE, DEPLOYMENT, workload({"name": "AWS_SECRET_ACCESS_KEY", "value": AWS_SECRET}),
         "violation", "env[0] (AWS_SECRET_ACCESS_KEY)"),
    Case("env-google-credentials-json", RULE, "kubernetes:batch/v1:CronJob",
         {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
             {"name": "sync", "image": "a:1", "env": [{"name": "GOOGLE_CREDENTIALS", "value": GCP_KEY}]}]}}}}}},
         "violation"),
    Case("env-computed-secret-written-into-the-spec", RULE, DEPLOYMENT,
         workload({"name": "AZURE_CLIENT_SECRET", "value": UNKNOWN_STRING_VALUE}), "violation", "pod spec"),
    Case("init-container-connection-string", RULE, DEPLOYMENT,
         {"spec": {"template": {"spec": {"initContainers": [
             {"name": "fetch", "image": "a:1", "env": [{"name": "STORE", "value": STORAGE_CONNECTION}]}],
             "containers": [{"name": "app", "image": "a:1"}]}}}}, "violation", "initContainers[0]"),
    Case("args-aws-key", RULE, "kubernetes:core/v1:Pod",
         {"spec": {"containers": [{"name": "cli", "image": "amazon/aws-cli:2",
                                   "args": ["configure", "set", "aws_access_key_id", AWS_KEY_ID]}]}}, "violation",
         "args[3]"),
    Case("deployment-patch-env", RULE, "kubernetes:apps/v1:DeploymentPatch",
         workload({"name": "ARM_CLIENT_SECRET", "value": "hunter2"}), "violation"),
    Case("helm-values-secret-key", RULE, HELM,
         {"chart": "external-dns", "values": {"aws": {"credentials": {"accessKey": AWS_KEY_ID,
                                                                      "secretKey": AWS_SECRET}}}}, "violation",
         "values.aws.credentials.accessKey"),
    Case("helm-values-by-name", RULE, "kubernetes:helm.sh/v4:Chart",
         {"chart": "x", "values": {"env": [{"name": "a", "awsSecretAccessKey": "abc"}]}}, "violation"),
    Case("secret-credential-computed-during-preview", RULE, SECRET,
         secret(AWS_SECRET_ACCESS_KEY=UNKNOWN_STRING_VALUE), "unknown", "AWS_SECRET_ACCESS_KEY"),
    Case("secret-computed-fail-closed", RULE, SECRET, secret(AWS_SECRET_ACCESS_KEY=UNKNOWN_STRING_VALUE), "violation",
         "cannot verify", {"failClosed": True}),
    Case("secret-string-data-unknown", RULE, SECRET,
         {"metadata": {"name": "creds"}, "stringData": UNKNOWN_STRING_VALUE}, "unknown"),
    Case("tls-secret", RULE, SECRET,
         {"metadata": {"name": "api-tls"}, "type": "kubernetes.io/tls",
          "stringData": {"tls.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                         "tls.key": TLS_KEY}}, "pass"),
    Case("serving-api-key-secret", RULE, SECRET, secret(**{"api-key": "[secret]"}), "pass"),
    Case("serving-api-key-computed", RULE, SECRET, secret(**{"api-key": UNKNOWN_STRING_VALUE}), "pass"),
    Case("database-password", RULE, SECRET, secret(POSTGRES_PASSWORD="correct horse battery staple"), "pass"),
    Case("env-from-secret", RULE, DEPLOYMENT,
         workload({"name": "AWS_SECRET_ACCESS_KEY",
                   "valueFrom": {"secretKeyRef": {"name": "creds", "key": "AWS_SECRET_ACCESS_KEY"}}}), "pass"),
    Case("env-credentials-file-path", RULE, DEPLOYMENT,
         workload({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/run/secrets/gcp/key.json"},
                  {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/serving"}), "pass"),
    Case("env-empty-credential-name", RULE, DEPLOYMENT, workload({"name": "AWS_SESSION_TOKEN", "value": ""}), "pass"),
    Case("helm-values-role-annotation", RULE, HELM,
         {"chart": "cluster-autoscaler", "values": {"rbac": {"serviceAccount": {"annotations": {
             "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/autoscaler"}}}}}, "pass"),
    Case("secret-exempt", RULE, SECRET, secret(AWS_ACCESS_KEY_ID=AWS_KEY_ID), "pass", "",
         {"exemptions": [{"namespace": "servestack", "reason": "the on-premises mirror cannot use IRSA, SEC-51"}]}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_credentials_case(case: Case) -> None:
    assert_case(case)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
