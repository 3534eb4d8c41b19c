"""The price catalog: every price with its source and date, each stack priced in its own region, and
`servestack catalog refresh` against recorded answers of the clouds' price APIs, served on 127.0.0.1."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from infra import catalog
from servestack.catalog_refresh import stack_regions
from servestack.cost import estimate
from tests.servestack.conftest import serve_http

REPO = Path(__file__).resolve().parents[2]
RECORDED = Path(__file__).parent / "recorded"
Plan = Callable[[str], dict[str, Any]]


def test_every_price_names_its_source_and_date() -> None:
    data = json.loads(catalog.PRICES_FILE.read_text())
    entries = [e for regions in data["machines"].values() for machines in regions.values()
               for kinds in machines.values() for e in kinds.values()]
    entries += [e for fees in data["fees"].values() for e in fees.values()]
    assert len(entries) > 40
    for entry in entries:
        assert entry["usd_per_hour"] >= 0 and entry["source"].startswith("https://") and entry["as_of"][:4].isdigit()


def test_the_regions_the_stacks_use_are_priced_for_their_machines() -> None:
    assert stack_regions(REPO / "stacks") == {("aws", "us-east-1"), ("azure", "eastus"), ("gcp", "us-central1")}
    for cloud, region in stack_regions(REPO / "stacks"):
        for m in catalog.machines(cloud):
            assert m.price(region).usd_per_hour > 0 and m.price(region, spot=True).region == region


def test_a_stack_in_a_region_the_catalog_lacks_is_left_unpriced_and_says_how_to_price_it(stack_plan: Plan) -> None:
    plan = copy.deepcopy(stack_plan("aws-dev"))
    plan["config"]["aws:region"] = "eu-central-1"
    e = estimate(plan)
    assert e.region == "eu-central-1" and e.replica_per_hour is None  # never the price of another region
    assert ("node pool aws-eks-gpu-nodes: no prices for aws region 'eu-central-1' in the catalog (it holds "
            "us-east-1); add it with `servestack catalog refresh --region aws:eu-central-1`") in e.unpriced
    assert not any(line.item.startswith(("GPU nodes", "nodes ")) for line in e.lines)


def test_each_line_of_an_estimate_carries_its_price_source(stack_plan: Plan) -> None:
    e = estimate(stack_plan("gcp-dev"))
    gpu = next(line for line in e.lines if line.item.startswith("GPU nodes"))
    assert (gpu.per_hour, gpu.source, gpu.as_of) == (0.28, "https://cloud.google.com/spot-vms/pricing", "2025")
    assert all(line.source and line.as_of for line in e.lines)


# --- `servestack catalog refresh` against the recorded answers --------------------------------------------


class Recorded(BaseHTTPRequestHandler):
    """Answers as the price APIs do, from the files under recorded/; remembers what it was asked."""

    asked: list[str] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        path = parts.path
        if path == "/api/retail/prices":
            file = RECORDED / "azure/api/retail" / ("prices.skip-100.json" if "$skip" in query else "prices.json")
        elif path.startswith("/v1/services/"):
            if query.get("key") != ["test-key"]:
                self.send_error(403, "API key not valid")
                return
            token = query.get("pageToken", [""])[0]
            file = RECORDED / "gcp" / path.lstrip("/") / ".." / f"skus{'.' + token if token else ''}.json"
        else:
            file = RECORDED / "aws" / path.lstrip("/")
        if not file.resolve().is_file():
            self.send_error(404)
            return
        body = file.resolve().read_bytes().replace(b"https://prices.azure.com:443", self.base.encode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def price_apis() -> Iterator[str]:
    Recorded.asked = []
    with serve_http(Recorded) as url:
        yield url


def refresh(base: str, out: Path, *extra: str, key: str | None = "test-key") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_API_KEY"}
    if key:
        env["GOOGLE_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "servestack.cli", "catalog", "refresh", "--out", str(out),
                           "--aws-base", base, "--azure-base", base, "--gcp-base", base, *extra],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env={**env, "COLUMNS": "200"})


def test_refresh_rebuilds_the_prices_of_every_region_from_the_apis(price_apis: str, tmp_path: Path) -> None:
    out = tmp_path / "prices.json"
    shutil.copy(catalog.PRICES_FILE, out)
    result = refresh(price_apis, out, "--region", "aws:eu-west-1")
    assert result.returncode == 0, result.stderr
    machines = json.loads(out.read_text())["machines"]

    # AWS: the one Linux, shared, on-demand row of g6.xlarge (not the reserved, Windows, dedicated, unused-reservation
    # or SQL Server rows), dated by the price list's publication
    aws_url = f"{price_apis}/offers/v1.0/aws/AmazonEC2/current/us-east-1/index.csv"
    assert machines["aws"]["us-east-1"]["g6.xlarge"]["on_demand"] == {
        "usd_per_hour": 0.8048, "source": aws_url, "as_of": "2026-11-20"}
    # the price list has no spot prices: the previous figure stays, with its own source and date
    assert machines["aws"]["us-east-1"]["g6.xlarge"]["spot"] == {
        "usd_per_hour": 0.33, "source": "https://aws.amazon.com/ec2/spot/pricing/", "as_of": "2025"}
    assert "aws us-east-1 g6.xlarge spot: not in the API's answer; kept (as of 2025)" in result.stdout
    # a region asked for: priced from its own file; no spot figure known there, so none is written
    assert machines["aws"]["eu-west-1"]["g6.xlarge"] == {"on_demand": {
        "usd_per_hour": 0.9104, "source": f"{price_apis}/offers/v1.0/aws/AmazonEC2/current/eu-west-1/index.csv",
        "as_of": "2026-11-20"}}
    assert machines["aws"]["eu-west-1"]["m6i.large"]["on_demand"]["usd_per_hour"] == 0.107

    # Azure: Linux consumption and Spot meters, over two pages; Windows, Low Priority and Dev/Test left out
    azure = machines["azure"]["eastus"]
    assert azure["Standard_NC4as_T4_v3"]["on_demand"]["usd_per_hour"] == 0.526
    assert azure["Standard_NC4as_T4_v3"]["spot"]["usd_per_hour"] == 0.0526
    assert azure["Standard_NC24ads_A100_v4"]["spot"]["usd_per_hour"] == 0.9917
    assert azure["Standard_D2ds_v5"]["on_demand"]["usd_per_hour"] == 0.113
    assert azure["Standard_D2ds_v5"]["on_demand"]["source"].startswith(
        f"{price_apis}/api/retail/prices?$filter=serviceName%20eq%20'Virtual%20Machines'%20and%20armRegionName%20eq"
        "%20'eastus'")
    assert any("$skip=100" in asked for asked in Recorded.asked)  # the second page was read

    # GCP: g2-standard-4 = 4 vCPUs x G2 core + 16 GiB x G2 RAM + 1 L4; Spot from the Spot Preemptible SKUs
    gcp = machines["gcp"]["us-central1"]
    assert gcp["g2-standard-4"]["on_demand"]["usd_per_hour"] == pytest.approx(4 * 0.024988 + 16 * 0.002928 + 0.560279)
    assert gcp["g2-standard-4"]["spot"]["usd_per_hour"] == pytest.approx(4 * 0.009995 + 16 * 0.001171 + 0.224112)
    assert gcp["e2-standard-2"]["on_demand"]["usd_per_hour"] == pytest.approx(2 * 0.02181159 + 8 * 0.00292353)
    assert gcp["g2-standard-4"]["on_demand"]["source"] == f"{price_apis}/v1/services/6F81-5844-456A/skus"
    assert "test-key" not in out.read_text()  # the key is never written down
    # a machine whose SKUs the answer lacks (no A2 cores in the recording) keeps its previous price, listed
    assert gcp["a2-highgpu-1g"]["on_demand"]["as_of"] == "2025"
    assert "gcp us-central1 a2-highgpu-1g on-demand: not in the API's answer; kept (as of 2025)" in result.stdout

    # the fixed fees are not refreshed
    assert json.loads(out.read_text())["fees"] == json.loads(catalog.PRICES_FILE.read_text())["fees"]


def test_without_a_gcp_key_gcp_keeps_its_prices_and_says_so(price_apis: str, tmp_path: Path) -> None:
    out = tmp_path / "prices.json"
    shutil.copy(catalog.PRICES_FILE, out)
    result = refresh(price_apis, out, "--cloud", "gcp", key=None)
    assert result.returncode == 0, result.stderr
    assert "gcp us-central1: no API key (set $GOOGLE_API_KEY); prices kept as they were" in result.stdout
    assert json.loads(out.read_text()) == json.loads(catalog.PRICES_FILE.read_text())
    assert Recorded.asked == []


@pytest.mark.parametrize(("extra", "message"), [
    (("--region", "eu-west-1"), "--region 'eu-west-1': expected CLOUD:REGION with CLOUD one of aws, gcp, azure"),
    (("--gcp-base", "http://billing.example.com"),
     "--gcp-base 'http://billing.example.com': expected an https:// URL (http:// only on 127.0.0.1 or localhost)"),
])
def test_bad_arguments_are_refused_naming_them(price_apis: str, tmp_path: Path, extra: tuple[str, ...],
                                               message: str) -> None:
    result = refresh(price_apis, tmp_path / "prices.json", *extra)
    assert result.returncode == 2 and message in result.stderr and Recorded.asked == []
