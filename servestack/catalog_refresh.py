"""`servestack catalog refresh`: rebuild the machine prices of `infra/prices.json` from the clouds' public price APIs.

    servestack catalog refresh [--region CLOUD:REGION ...] [--cloud aws|gcp|azure ...] [--out FILE]

For every catalog machine type (GPU and CPU, infra/catalog.py) in every region the stacks use (stacks/*.yaml),
every region the file already holds and every `--region` given:

- AWS: the public price list file of EC2 for the region, as CSV
  (https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/REGION/index.csv), streamed and
  filtered row by row (the file is gigabytes); Linux, shared tenancy, no pre-installed software, on demand.
  Its publication date is the prices' as-of date. The list holds no spot prices (they change hourly and need
  credentials to read): AWS spot figures stay as they were, with their own source and date.
- Azure: the Retail Prices API (https://prices.azure.com/api/retail/prices, no key), Linux consumption and
  Spot meters of the machine types, page by page.
- GCP: the Cloud Billing Catalog API of Compute Engine (services/6F81-5844-456A/skus, an API key from
  $GOOGLE_API_KEY or --gcp-key-env). A machine's price is composed as GCP bills it: vCPUs x its family's core
  price + memory GiB x its family's RAM price + GPUs x the GPU's price, on demand and Spot.

Only machine prices are refreshed; what the APIs do not answer keeps its previous entry (and its as-of date),
and is listed. Fixed fees (control planes, NAT, load balancers, addresses) are kept as they are.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape

from infra import catalog
from infra.config import REGION_KEYS
from servestack import terminal

AWS_BASE = "https://pricing.us-east-1.amazonaws.com"
AZURE_BASE = "https://prices.azure.com"
GCP_BASE = "https://cloudbilling.googleapis.com"
GCP_COMPUTE_SERVICE = "6F81-5844-456A"
TIMEOUT_SECONDS = 120
EXIT_BAD_INPUT = 2

# GCP bills a GPU under its own SKU; these are the SKUs' names (without " running in <geography>").
GCP_GPU_SKUS = {"nvidia-l4": "Nvidia L4 GPU", "nvidia-tesla-a100": "Nvidia Tesla A100 GPU",
                "nvidia-a100-80gb": "Nvidia Tesla A100 80GB GPU", "nvidia-h100-80gb": "Nvidia H100 80GB GPU"}


class RefreshError(RuntimeError):
    pass


@dataclass
class Found:
    """Prices one API answered for one cloud and region: machine type -> {"on_demand"|"spot": price entry}."""

    prices: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def add(self, machine_type: str, kind: str, usd_per_hour: float, source: str, as_of: str) -> None:
        entry = {"usd_per_hour": round(usd_per_hour, 8), "source": source, "as_of": as_of}
        self.prices.setdefault(machine_type, {})[kind] = entry


def machine_types(cloud: str) -> list[str]:
    return sorted({m.machine_type for m in catalog.machines(cloud)} |
                  {t for c, t in catalog.CPU_MACHINES if c == cloud})


def _open(url: str) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "servestack-catalog-refresh"})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except OSError as error:  # URLError and HTTPError are OSErrors
        raise RefreshError(f"{_without_key(url)}: {error}") from error


def _get_json(url: str) -> dict[str, Any]:
    with _open(url) as response:
        data: dict[str, Any] = json.load(response)
        return data


def _without_key(url: str) -> str:
    """A URL safe to print or record: no API key."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "key"]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe="$',=")))


# --- AWS: the price list file of a region ----------------------------------------------------------------


def aws_prices(region: str, wanted: Iterable[str], base: str = AWS_BASE) -> Found:
    url = f"{base}/offers/v1.0/aws/AmazonEC2/current/{region}/index.csv"
    with _open(url) as response:
        return _aws_rows(io.TextIOWrapper(response, encoding="utf-8", newline=""), set(wanted), url)


def _aws_rows(stream: Iterable[str], wanted: set[str], url: str) -> Found:
    lines = iter(stream)
    meta = dict(row[:2] for row in csv.reader(next(lines) for _ in range(5)) if len(row) >= 2)
    if meta.get("OfferCode") != "AmazonEC2" or "Publication Date" not in meta:
        raise RefreshError(f"{url}: not an EC2 price list file (no OfferCode AmazonEC2 and Publication Date)")
    as_of = meta["Publication Date"][:10]
    found, left = Found(), set(wanted)
    for row in csv.DictReader(lines):
        machine_type = row.get("Instance Type", "")
        if machine_type not in left:
            continue
        if (row.get("TermType"), row.get("Operating System"), row.get("Tenancy"), row.get("Pre Installed S/W"),
                row.get("CapacityStatus"), row.get("Unit"), row.get("Product Family")) != (
                "OnDemand", "Linux", "Shared", "NA", "Used", "Hrs", "Compute Instance"):
            continue
        if row.get("MarketOption", "OnDemand") != "OnDemand":
            continue
        found.add(machine_type, "on_demand", float(row["PricePerUnit"]), url, as_of)
        left.discard(machine_type)
        if not left:  # the rest of a file of gigabytes holds nothing more we need
            break
    return found


# --- Azure: the Retail Prices API ------------------------------------------------------------------------


def azure_prices(region: str, wanted: Iterable[str], base: str = AZURE_BASE, today: str | None = None) -> Found:
    names = sorted(wanted)
    skus = " or ".join(f"armSkuName eq '{name}'" for name in names)
    query = urllib.parse.urlencode({"$filter": f"serviceName eq 'Virtual Machines' and armRegionName eq '{region}' "
                                               f"and priceType eq 'Consumption' and ({skus})"}, safe="$',()",
                                   quote_via=urllib.parse.quote)
    url: str | None = f"{base}/api/retail/prices?{query}"
    source, as_of, found = f"{base}/api/retail/prices?{query}", today or _today(), Found()
    while url:
        page = _get_json(url)
        for item in page.get("Items") or []:
            name, sku = item.get("armSkuName"), str(item.get("skuName", ""))
            if (name not in names or item.get("armRegionName") != region or item.get("type") != "Consumption"
                    or item.get("unitOfMeasure") != "1 Hour" or item.get("currencyCode", "USD") != "USD"
                    or str(item.get("productName", "")).endswith("Windows") or "Low Priority" in sku):
                continue
            found.add(name, "spot" if sku.endswith(" Spot") else "on_demand", float(item["retailPrice"]), source,
                      as_of)
        url = page.get("NextPageLink")
    return found


# --- GCP: the Cloud Billing Catalog, machines composed of cores, memory and GPUs ----------------------------


_GCP_SPOT = re.compile(r"^Spot Preemptible | attached to Spot Preemptible VMs")
_GCP_GEOGRAPHY = re.compile(r" running in .*$")


def _gcp_skus(base: str, key: str) -> Iterator[dict[str, Any]]:
    token = ""
    while True:
        query = urllib.parse.urlencode({"key": key, "currencyCode": "USD", **({"pageToken": token} if token else {})})
        page = _get_json(f"{base}/v1/services/{GCP_COMPUTE_SERVICE}/skus?{query}")
        yield from page.get("skus") or []
        token = page.get("nextPageToken") or ""
        if not token:
            return


def _gcp_unit_price(sku: Mapping[str, Any]) -> float:
    """The first tier's price per usage unit (an hour, or a GiB-hour)."""
    rates = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"]
    price = min(rates, key=lambda r: float(r.get("startUsageAmount", 0)))["unitPrice"]
    return int(price.get("units") or 0) + int(price.get("nanos") or 0) / 1e9


def gcp_prices(regions: Iterable[str], key: str, base: str = GCP_BASE, today: str | None = None) -> dict[str, Found]:
    """Every region's machine prices, from one pass over the Compute Engine SKUs."""
    regions = set(regions)
    # (region, usage type, SKU name) -> price per unit, for the core, RAM and GPU SKUs
    unit: dict[tuple[str, str, str], float] = {}
    for sku in _gcp_skus(base, key):
        category = sku.get("category") or {}
        usage = category.get("usageType")
        if usage not in ("OnDemand", "Preemptible"):  # not commitments
            continue
        # "Spot Preemptible G2 Instance Core running in Americas" -> "G2 Instance Core": exact names below, so
        # custom, sole-tenant and other variants never match.
        name = _GCP_GEOGRAPHY.sub("", _GCP_SPOT.sub("", str(sku.get("description", ""))))
        for region in regions.intersection(sku.get("serviceRegions") or []):
            unit[(region, usage, name)] = _gcp_unit_price(sku)

    source = f"{base}/v1/services/{GCP_COMPUTE_SERVICE}/skus"
    as_of, result = today or _today(), {}
    for region in regions:
        found = Found()
        for machine_type, vcpus, memory_gb, gpu_sku, gpus in _gcp_machines():
            family = machine_type.split("-", 1)[0].upper()
            for usage, kind in (("OnDemand", "on_demand"), ("Preemptible", "spot")):
                parts = [(f"{family} Instance Core", vcpus), (f"{family} Instance Ram", memory_gb)]
                parts += [(gpu_sku, gpus)] if gpu_sku else []
                if all((region, usage, name) in unit for name, _ in parts):
                    price = sum(unit[(region, usage, name)] * count for name, count in parts)
                    found.add(machine_type, kind, price, source, as_of)
        result[region] = found
    return result


def _gcp_machines() -> Iterator[tuple[str, int, int, str | None, int]]:
    for m in catalog.machines("gcp"):
        yield m.machine_type, m.vcpus, m.memory_gb, GCP_GPU_SKUS.get(m.gpu_type), m.gpus
    for (cloud, machine_type), (vcpus, memory_gb) in catalog.CPU_MACHINES.items():
        if cloud == "gcp":
            yield machine_type, vcpus, memory_gb, None, 0


# --- the catalog file ------------------------------------------------------------------------------------


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def stack_regions(stacks_dir: Path) -> set[tuple[str, str]]:
    from servestack.offline.plan import read_stack_config, stack_names

    regions = set()
    for stack in stack_names(stacks_dir):
        config = read_stack_config(stack, stacks_dir)
        cloud = config.get("servestack:cloud")
        if cloud in REGION_KEYS and config.get(REGION_KEYS[cloud]):
            regions.add((str(cloud), str(config[REGION_KEYS[cloud]])))
    return regions


@dataclass(frozen=True)
class Bases:
    aws: str = AWS_BASE
    azure: str = AZURE_BASE
    gcp: str = GCP_BASE


def refresh(catalog_data: dict[str, Any], regions: set[tuple[str, str]], gcp_key: str | None,
            bases: Bases = Bases()) -> tuple[dict[str, Any], list[str]]:
    """The catalog with the machine prices of `regions` renewed, and what was kept unrenewed (and why)."""
    machines: dict[str, dict[str, Any]] = {cloud: dict(held) for cloud, held in catalog_data["machines"].items()}
    kept: list[str] = []
    answered: dict[tuple[str, str], Found] = {}
    for cloud, region in sorted(regions):
        if cloud == "aws":
            answered[(cloud, region)] = aws_prices(region, machine_types("aws"), bases.aws)
        elif cloud == "azure":
            answered[(cloud, region)] = azure_prices(region, machine_types("azure"), bases.azure)
    gcp_regions = {region for cloud, region in regions if cloud == "gcp"}
    if gcp_regions and gcp_key:
        for region, found in gcp_prices(gcp_regions, gcp_key, bases.gcp).items():
            answered[("gcp", region)] = found
    elif gcp_regions:
        kept.append(f"gcp {', '.join(sorted(gcp_regions))}: no API key (set $GOOGLE_API_KEY); prices kept as they were")

    for (cloud, region), found in sorted(answered.items()):
        held = machines.setdefault(cloud, {}).get(region, {})
        merged = {}
        for machine_type in machine_types(cloud):
            entry = {**held.get(machine_type, {}), **found.prices.get(machine_type, {})}
            for kind in ("on_demand", "spot"):
                if kind in held.get(machine_type, {}) and kind not in found.prices.get(machine_type, {}):
                    kept.append(f"{cloud} {region} {machine_type} {kind.replace('_', '-')}: not in the API's answer; "
                                f"kept (as of {held[machine_type][kind]['as_of']})")
            if entry:
                merged[machine_type] = entry
            else:
                kept.append(f"{cloud} {region} {machine_type}: no price in the API's answer")
        machines[cloud][region] = merged
    return {**catalog_data, "machines": machines}, kept


# --- command line ----------------------------------------------------------------------------------------


def register(commands: Any) -> None:
    """Add `catalog refresh` to the servestack command line."""
    from servestack.offline.plan import STACKS_DIR

    catalog_parser = commands.add_parser("catalog", help="the price catalog (infra/prices.json)")
    verbs = catalog_parser.add_subparsers(dest="catalog_command", required=True)
    parser = verbs.add_parser("refresh", help="rebuild the machine prices from the clouds' public price APIs")
    parser.add_argument("--region", action="append", default=[], metavar="CLOUD:REGION",
                        help="a region to price besides the stacks' own, e.g. aws:eu-west-1")
    parser.add_argument("--cloud", action="append", choices=catalog.PRICED_CLOUDS,
                        help="refresh only this cloud (repeatable; default: all)")
    parser.add_argument("--gcp-key-env", default="GOOGLE_API_KEY",
                        help="the environment variable holding the Cloud Billing API key (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=catalog.PRICES_FILE, help="the catalog file (default: "
                                                                                "infra/prices.json)")
    parser.add_argument("--stacks-dir", type=Path, default=STACKS_DIR, help=argparse.SUPPRESS)
    for cloud, default in (("aws", AWS_BASE), ("azure", AZURE_BASE), ("gcp", GCP_BASE)):
        parser.add_argument(f"--{cloud}-base", default=default, help=f"{cloud}'s price API (default: %(default)s)")
    parser.set_defaults(handler=run)


def _check_base(option: str, base: str) -> str | None:
    """An API base must be https (the GCP key travels in the query), or plain http on this machine only."""
    parts = urllib.parse.urlsplit(base)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")):
        return None
    return f"{option} {base!r}: expected an https:// URL (http:// only on 127.0.0.1 or localhost)"


def run(args: argparse.Namespace) -> int:
    for option, base in (("--aws-base", args.aws_base), ("--azure-base", args.azure_base),
                         ("--gcp-base", args.gcp_base)):
        if (problem := _check_base(option, base)) is not None:
            terminal.errors.print(f"[bold red]error:[/] {escape(problem)}", highlight=False)
            return EXIT_BAD_INPUT
    regions = set()
    for value in args.region:
        cloud, sep, region = value.partition(":")
        if not sep or cloud not in catalog.PRICED_CLOUDS or not re.fullmatch(r"[a-z][a-z0-9-]+[0-9a-z]", region):
            terminal.errors.print(f"[bold red]error:[/] --region {escape(value)!r}: expected CLOUD:REGION with CLOUD "
                                  f"one of {', '.join(catalog.PRICED_CLOUDS)}, e.g. aws:eu-west-1", highlight=False)
            return EXIT_BAD_INPUT
        regions.add((cloud, region))
    try:
        current = json.loads(args.out.read_text())
        regions |= stack_regions(args.stacks_dir)
        regions |= {(cloud, region) for cloud, held in current["machines"].items() for region in held}
        if args.cloud:
            regions = {(cloud, region) for cloud, region in regions if cloud in args.cloud}
        with terminal.console.status("reading the clouds' price APIs"):
            updated, kept = refresh(current, regions, os.environ.get(args.gcp_key_env),
                                    Bases(args.aws_base, args.azure_base, args.gcp_base))
    except (OSError, ValueError, KeyError, RefreshError) as error:
        terminal.errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return 1
    args.out.write_text(json.dumps(updated, indent=1) + "\n")
    for cloud, region in sorted(regions):
        count = len(updated["machines"].get(cloud, {}).get(region, {}))
        terminal.console.print(f"{cloud} {region}: {count} machine type(s) priced")
    for line in kept:
        terminal.console.print(f"[yellow]kept:[/] {escape(line)}")
    terminal.console.print(f"catalog written to {args.out}")
    return 0
