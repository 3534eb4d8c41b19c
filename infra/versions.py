"""The Kubernetes minor versions each managed cloud supports, with the dates that bound them.

One table feeds config validation (a version outside its cloud's window on the day of `pulumi up` is
refused, the window named in the message) and the docs. A version is in the window from the day the
cloud made it generally available to the day its standard support ends: after that day EKS upgrades a
cluster on standard support by itself, AKS drops the version unless the cluster pays for LTS (Premium
tier, which servestack does not configure), and GKE's release channels stop offering it (the Extended
channel keeps it for about two years from its release, at extra cost).

Sources, read on 2026-11-29: the EKS user guide's Kubernetes versions page and endoflife.date/amazon-eks
(1.35, 1.36); the AKS docs' supported Kubernetes versions (AKS states months: the last day is used);
the GKE release schedule as endoflife.date/google-kubernetes-engine mirrors it: availability in the Regular
channel, then about 14 months of standard support and 24 in all on the Extended channel (GKE's stated
spans, from which the 1.34 row and every Extended date are computed, so approximate). GKE's Stable
channel gets a minor some months after Regular; the window does not model that lag.
Check a cloud's live list before relying on a date near today:
  aws eks describe-cluster-versions --query 'clusterVersions[].[clusterVersion,status]'
  gcloud container get-server-config --region REGION --format 'yaml(channels)'
  az aks get-versions --location LOCATION --output table
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date

# The day the windows are judged on: today, unless SERVESTACK_TODAY (an ISO date) names another, which
# the tests set so that their stacks do not age out of a window.
TODAY_VARIABLE = "SERVESTACK_TODAY"


def today() -> date:
    pinned = os.environ.get(TODAY_VARIABLE)
    return date.fromisoformat(pinned) if pinned else date.today()


@dataclass(frozen=True)
class Release:
    minor: str
    available: date  # generally available on that cloud (GKE: in the Regular channel)
    end_of_standard_support: date
    end_of_extended_support: date | None = None  # GKE's Extended channel

    def supported(self, today: date, extended: bool = False) -> bool:
        end = self.end_of_extended_support if extended and self.end_of_extended_support else \
            self.end_of_standard_support
        return self.available <= today < end


def _d(text: str) -> date:
    return date.fromisoformat(text)


RELEASES: dict[str, tuple[Release, ...]] = {
    "aws": (
        Release("1.32", _d("2025-01-23"), _d("2026-03-23")),
        Release("1.33", _d("2025-05-29"), _d("2026-07-29")),
        Release("1.34", _d("2025-10-02"), _d("2026-12-02")),
        Release("1.35", _d("2026-01-27"), _d("2027-03-27")),
        Release("1.36", _d("2026-06-02"), _d("2027-08-02")),
    ),
    "gcp": (
        Release("1.32", _d("2025-02-11"), _d("2026-04-11"), _d("2027-02-11")),
        Release("1.33", _d("2025-06-03"), _d("2026-08-03"), _d("2027-06-03")),
        Release("1.34", _d("2025-09-30"), _d("2026-11-30"), _d("2027-09-30")),
        Release("1.35", _d("2026-02-11"), _d("2027-04-11"), _d("2028-02-11")),
        Release("1.36", _d("2026-06-09"), _d("2027-08-09"), _d("2028-06-09")),
    ),
    "azure": (
        Release("1.32", _d("2025-04-30"), _d("2026-03-31")),
        Release("1.33", _d("2025-06-30"), _d("2026-07-31")),
        Release("1.34", _d("2025-11-30"), _d("2026-11-30")),
        Release("1.35", _d("2026-03-31"), _d("2027-03-31")),
        Release("1.36", _d("2026-06-30"), _d("2027-06-30")),
    ),
}


def release(cloud: str, minor: str) -> Release | None:
    return next((r for r in RELEASES.get(cloud, ()) if r.minor == minor), None)


def window(cloud: str, today: date, extended: bool = False) -> list[Release]:
    """The cloud's releases in support on `today`, oldest first."""
    return [r for r in RELEASES.get(cloud, ()) if r.supported(today, extended)]


def describe_window(cloud: str, today: date, extended: bool = False) -> str:
    """`1.35 (until 2027-03-27), 1.36 (until 2027-08-02)`: what a message offers instead."""
    def until(r: Release) -> date:
        return r.end_of_extended_support if extended and r.end_of_extended_support else r.end_of_standard_support
    return ", ".join(f"{r.minor} (until {until(r)})" for r in window(cloud, today, extended)) or "none"
