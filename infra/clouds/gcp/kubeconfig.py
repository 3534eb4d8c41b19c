"""The kubeconfig of a GKE cluster, built from its outputs, authenticating through gke-gcloud-auth-plugin."""

from __future__ import annotations

import json
from typing import Any


def private_ip(private_config: Any) -> str:
    """The control plane's private endpoint: the API server's address when the public one is off."""
    return str(private_config.private_endpoint) if private_config and private_config.private_endpoint else ""


def kubeconfig(values: list[Any]) -> str:
    """[project, location, cluster name, server address, CA data] -> a kubeconfig, as gcloud writes it.

    The exec plugin fetches a short-lived token from the caller's gcloud credentials: nothing secret is
    stored in the file beyond the cluster's address (it is a secret output all the same).
    """
    project, location, cluster_name, server, ca_data = values
    context = f"gke_{project}_{location}_{cluster_name}"
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": f"https://{server}",
                                                   "certificate-authority-data": ca_data}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
        "users": [{"name": context, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "gke-gcloud-auth-plugin",
            "installHint": "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin",
            "provideClusterInfo": True,
            "interactiveMode": "Never",
        }}}],
    }, indent=2)
