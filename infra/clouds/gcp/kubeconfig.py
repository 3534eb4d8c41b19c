"""The kubeconfig of a GKE cluster, built from its outputs, authenticating through gke-gcloud-auth-plugin."""

from __future__ import annotations

import json
from typing import Any


def dns_endpoint(endpoints_config: Any) -> str:
    """The cluster's DNS endpoint (`gke-<id>.<region>.gke.goog`), from controlPlaneEndpointsConfig."""
    dns = getattr(endpoints_config, "dns_endpoint_config", None) if endpoints_config else None
    endpoint = getattr(dns, "endpoint", None) if dns else None
    if not endpoint:
        raise ValueError("the GKE cluster reported no DNS endpoint (controlPlaneEndpointsConfig.dnsEndpointConfig)")
    return str(endpoint)


def kubeconfig(values: list[Any]) -> str:
    """[project, location, cluster name, server address, CA data] -> a kubeconfig, as gcloud writes it.

    The DNS endpoint presents a publicly trusted certificate and gets no CA data, as with
    `gcloud container clusters get-credentials --dns-endpoint`. The exec plugin fetches a short-lived
    token from Application Default Credentials, the credentials pulumi-gcp itself uses, so that Kubernetes
    sees the identity that made the cluster; nothing secret is stored in the file beyond the cluster's
    address (it is a secret output all the same).
    """
    project, location, cluster_name, server, ca_data = values
    context = f"gke_{project}_{location}_{cluster_name}"
    cluster: dict[str, str] = {"server": f"https://{server}"}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
        "users": [{"name": context, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "gke-gcloud-auth-plugin",
            "args": ["--use_application_default_credentials"],
            "installHint": "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin",
            "provideClusterInfo": True,
            "interactiveMode": "Never",
        }}}],
    }, indent=2)
