"""ACME DNS-01 in the stack's Route 53 hosted zone (servestack:gateway.dnsZone), and the hostname's record there.

cert-manager proves the hostname with a TXT record it writes as an IRSA role that may change only that record,
in that zone. The hostname itself is a CNAME to the gateway's Network Load Balancer, whose addresses AWS
changes as it pleases: only its DNS name is stable.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from infra.clouds import dns
from infra.clouds.aws import iam
from infra.config import NAMESPACE, ConfigError, StackConfig
from infra.gateway import CERT_MANAGER_NAMESPACE, CERT_MANAGER_SERVICE_ACCOUNT
from infra.platform import AcmeDns


def acme_dns(name: str, config: StackConfig, oidc: aws.iam.OpenIdConnectProvider, region: str, partition: str,
             parent: pulumi.Resource) -> AcmeDns:
    zone_id, hostname, stack = str(config.gateway.dns_zone), str(config.gateway.hostname), config.stack
    child = pulumi.ResourceOptions(parent=parent)
    zone = aws.route53.get_zone_output(zone_id=zone_id, opts=pulumi.InvokeOutputOptions(parent=parent))

    def record_name(host: str) -> pulumi.Output[str]:
        """The record's name, once the zone is known to hold it (the plan fails by name otherwise)."""
        return zone.apply(lambda found: _record_name(stack, host, zone_id, found))

    role = iam.irsa_role(f"{name}-cert-manager-role", oidc, CERT_MANAGER_NAMESPACE, CERT_MANAGER_SERVICE_ACCOUNT,
                         child)
    challenge = dns.challenge_name(hostname)
    policy = aws.iam.RolePolicy(
        f"{name}-cert-manager-dns01", role=role.id,
        policy=record_name(hostname).apply(lambda _: iam.acme_challenge_policy(partition, zone_id, challenge)),
        opts=child)

    def record(resource_name: str, host: str, address: pulumi.Output[str],
               opts: pulumi.ResourceOptions) -> pulumi.Resource:
        return aws.route53.Record(resource_name, zone_id=zone_id, name=record_name(host), type="CNAME",
                                  ttl=dns.RECORD_TTL, records=[address], opts=opts)

    return AcmeDns(
        # Ambient credentials (IRSA), which cert-manager grants a ClusterIssuer by default.
        solver={"route53": {"region": region, "hostedZoneID": zone_id}},
        service_account_annotations={"eks.amazonaws.com/role-arn": role.arn},
        pod_labels={},
        ready=(policy,),
        record=record,
    )


def _record_name(stack: str, hostname: str, zone_id: str, zone: Any) -> str:
    if zone.private_zone:
        raise ConfigError(stack, [
            f"{NAMESPACE}:gateway.dnsZone: {zone_id!r} is a private hosted zone ({zone.name}); the ACME server and "
            "the endpoint's clients resolve the hostname in public DNS: name a public hosted zone"])
    if not dns.name_in_zone(stack, hostname, zone_id, zone.name):
        raise ConfigError(stack, [
            f"{NAMESPACE}:gateway.hostname: {hostname!r} is the apex of the zone {zone_id!r}; the hostname points "
            "at the load balancer's DNS name with a CNAME, which DNS allows only below the apex: use a name such "
            f"as api.{zone.name}"])
    return hostname
