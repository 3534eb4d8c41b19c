"""The stack's hostname in its DNS zone (servestack:gateway.dnsZone), as each cloud's ACME DNS-01 set-up needs it.

Every cloud does the same three things there (see `infra.platform.AcmeDns`): cert-manager writes the TXT record
`_acme-challenge.<hostname>` for the ACME server to read, as a workload identity allowed nothing else in the
zone; the deployer writes the hostname's own record, pointing at the gateway's load balancer. What differs per
cloud is how a zone is named and how a record is named inside it; what is checked here is the same everywhere.
"""

from __future__ import annotations

from infra.config import NAMESPACE, ConfigError

# The hostname's record: short enough that a new load balancer address reaches clients within minutes.
RECORD_TTL = 300
# Where an ACME server looks for the DNS-01 answer for a name (RFC 8555, section 8.4).
CHALLENGE_LABEL = "_acme-challenge"


def challenge_name(hostname: str) -> str:
    """The TXT record cert-manager writes for `hostname`, lower case and without a trailing dot."""
    return f"{CHALLENGE_LABEL}.{hostname.rstrip('.').lower()}"


def name_in_zone(stack: str, hostname: str, dns_zone: str, zone_name: str) -> str:
    """The hostname relative to the zone (`api.aws` for api.aws.example.com in example.com; "" at the apex).

    Raises ConfigError naming both keys when the hostname is not inside the zone the stack names: neither its
    record nor the ACME challenge could be written there."""
    zone = zone_name.rstrip(".").lower()
    host = hostname.rstrip(".").lower()
    if host == zone:
        return ""
    if host.endswith(f".{zone}"):
        return host[:-len(zone) - 1]
    raise ConfigError(stack, [
        f"{NAMESPACE}:gateway.hostname: {hostname!r} is not inside the DNS zone {zone!r} that "
        f"{NAMESPACE}:gateway.dnsZone ({dns_zone!r}) names; choose a hostname under {zone}, or name the zone that "
        f"holds {hostname}"])
