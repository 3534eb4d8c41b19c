"""The pull request comment of `servestack cost-diff`: the exact Markdown for the two committed result sets,
new, removed and failed stacks, escaping, bad input, and `collect` on a checkout.

tests/servestack/plansets/ holds two result sets made with `servestack cost-diff collect` (check and cost
results, not whole plans): `base` from the stacks as committed, `head` from these edits of them:

- aws-prod: GPU pool 1..8 -> 2..10 and budgetPerHour 8 -> 10 (more GPU nodes, still in budget);
- gcp-dev: GPU pool 0..2 -> 0..4 (over its $1/h budget: a mandatory gpu-budget violation);
- gcp-prod: machineType g2-standard-5 (a config error: its plan fails);
- azure-dev removed; aws-staging new (a copy of aws-dev).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from servestack.cli import main
from servestack.cost_diff import CostDiffError, Line, StackResult, diff, load_results, result_from_json
from servestack.pr_comment import MARKER, MAX_BODY

REPO = Path(__file__).resolve().parents[2]
SETS = Path(__file__).resolve().parent / "plansets"

# The whole comment, as reviewed (and shown in the README).
EXPECTED = (SETS / "comment.md").read_text()


@pytest.fixture(scope="module")
def base() -> dict[str, StackResult]:
    return load_results(SETS / "base")


@pytest.fixture(scope="module")
def head() -> dict[str, StackResult]:
    return load_results(SETS / "head")


def test_the_comment_for_the_committed_result_sets(base: dict[str, StackResult],
                                                   head: dict[str, StackResult]) -> None:
    assert diff(base, head) == EXPECTED


def test_the_comment_starts_with_the_marker_the_poster_finds_it_by(base: dict[str, StackResult],
                                                                   head: dict[str, StackResult]) -> None:
    assert diff(base, head).splitlines()[0] == MARKER == "<!-- servestack-cost-diff -->"


def test_rows_of_new_removed_and_failed_stacks(base: dict[str, StackResult], head: dict[str, StackResult]) -> None:
    rows = {line.split(" | ")[0][2:]: line for line in diff(base, head).splitlines() if line.startswith("| ")}
    assert rows["aws-staging (new)"] == ("| aws-staging (new) | ✅ pass | — → $0.61 (+$0.61) | — → $1.03 (+$1.03) "
                                        "| — → $444 (+$444) | — → $755 (+$755) |")
    assert rows["azure-dev (removed)"] == ("| azure-dev (removed) | — | $0.47 → — (-$0.47) | $1.08 → — (-$1.08) "
                                          "| $340 → — (-$340) | $787 → — (-$787) |")
    assert rows["gcp-prod"] == ("| gcp-prod | ⚠️ plan failed (was pass) | $1.68 → ? | $6.07 → ? | $1,225 → ? "
                                "| $4,428 → ? |")
    # A failed plan leaves the sum of all stacks unknown: no total row.
    assert "all stacks" not in diff(base, head)


def test_a_plan_that_failed_on_the_base_and_is_fixed(base: dict[str, StackResult],
                                                     head: dict[str, StackResult]) -> None:
    comment = diff({**base, "gcp-prod": head["gcp-prod"]}, base, "main", "#42")
    assert "| gcp-prod | ✅ pass (was plan failed) | ? → $1.68 | ? → $6.07 | ? → $1,225 | ? → $4,428 |" in comment
    assert "⚠️ The plan of **gcp-prod** failed on main: `error: stack gcp-prod: invalid config" in comment
    assert "on main and on #42" in comment


def test_no_change_gives_single_figures_a_total_and_says_nothing_changed(base: dict[str, StackResult]) -> None:
    comment = diff(base, base)
    assert "| aws-prod | ✅ pass | $2.09 | $7.02 | $1,525 | $5,121 |" in comment
    assert "| **all stacks** | | $13.52 | $46.78 | $9,871 | $34,150 |" in comment
    assert "No priced line item changed." in comment
    assert "<details>" not in comment
    assert "→" not in comment


def test_the_total_of_all_stacks_changes_by_a_removed_stack(base: dict[str, StackResult]) -> None:
    head = {s: r for s, r in base.items() if s != "azure-prod"}  # $8.20/h idle, $30.69/h peak removed
    assert ("| **all stacks** | | $13.52 → $5.32 (-$8.20) | $46.78 → $16.09 (-$30.69) "
            "| $9,871 → $3,882 (-$5,989) | $34,150 → $11,743 (-$22,407) |") in diff(base, head)


def test_mandatory_violations_are_named_and_advisory_ones_counted() -> None:
    before = StackResult("s", 1.0, 2.0)
    after = StackResult("s", 1.0, 2.0, mandatory=("no-public-ssh", "gpu-budget", "no-public-ssh"), advisory=2)
    assert ("| s | ❌ 5 violations: 3 mandatory (`gpu-budget`, `no-public-ssh`), 2 advisory (was pass) | $1.00 | "
            "$2.00 | $730 | $1,460 |") in diff({"s": before}, {"s": after})
    assert "| s | ✅ pass, 2 advisory | " in diff({"s": before}, {"s": StackResult("s", 1.0, 2.0, advisory=2)})


def test_a_changed_price_and_count_of_one_line() -> None:
    before = StackResult("s", 0.5, 1.0, (Line("GPU nodes pool: g6.xlarge spot", 0.25, 2, 4),))
    after = StackResult("s", 1.6, 3.2, (Line("GPU nodes pool: g6.xlarge spot", 0.4, 4, 8),))
    assert ("| ~ | GPU nodes pool: g6.xlarge spot | $0.2500 → $0.4000 | 2 → 4 | 4 → 8 | $365 → $1,168 (+$803) "
            "| $730 → $2,336 (+$1,606) |") in diff({"s": before}, {"s": after})


def test_a_comment_too_long_for_github_leaves_the_line_items_out() -> None:
    lines = tuple(Line(f"public IPv4 address-{n:04d}", 0.005, 1, 1) for n in range(1500))
    comment = diff({}, {"s": StackResult("s", 7.5, 7.5, lines)})
    assert len(comment) < MAX_BODY
    assert "| s (new) | ✅ pass | — → $7.50 (+$7.50) |" in comment
    assert ("1500 priced line items changed in 1 stack: too many to list within the 65,536 characters GitHub "
            "allows a comment.") in comment
    assert "<details>" not in comment


def test_text_from_a_plan_cannot_break_the_table_or_the_html() -> None:
    after = StackResult("s", error="bad value | <script>alert(1)</script>\n`x`")
    comment = diff({}, {"s": after})
    assert "`bad value \\| &lt;script&gt;alert(1)&lt;/script&gt; 'x'`" in comment
    assert "<script>" not in comment


def test_a_result_file_that_is_not_one_names_the_file_and_the_field(tmp_path: Path) -> None:
    with pytest.raises(CostDiffError, match=r"x.json: not a cost-diff result .*KeyError: 'lines'"):
        result_from_json({"stack": "s", "cost": {"idle_per_hour": 1}, "violations": []}, "x.json")
    (tmp_path / "s.json").write_text("{")
    with pytest.raises(CostDiffError, match=r"s.json: Expecting property name"):
        load_results(tmp_path)
    with pytest.raises(CostDiffError, match=r"nowhere: no such directory"):
        load_results(tmp_path / "nowhere")


def test_the_command_writes_the_comment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "comment.md"
    assert main(["cost-diff", "--base", str(SETS / "base"), "--head", str(SETS / "head"), "--out", str(out)]) == 0
    assert out.read_text() == EXPECTED
    assert main(["cost-diff", "--base", str(SETS / "base")]) == 2
    assert "error: cost-diff needs --base and --head" in capsys.readouterr().err


def test_collect_plans_checks_and_prices_every_stack_of_a_checkout(tmp_path: Path) -> None:
    # A checkout whose stacks are the local stack and a broken copy of it.
    root = tmp_path / "checkout"
    (root / "stacks").mkdir(parents=True)
    for entry in ("infra", "servestack", "policies", "reading", "serving", "node_modules", "Pulumi.yaml"):
        (root / entry).symlink_to(REPO / entry)
    local = (REPO / "stacks" / "Pulumi.local.yaml").read_text()
    (root / "stacks" / "Pulumi.local.yaml").write_text(local)
    (root / "stacks" / "Pulumi.broken.yaml").write_text(local.replace("servestack:cloud: local",
                                                                      "servestack:cloud: moon"))
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "servestack.cli", "cost-diff", "collect", "--root", str(root),
                           "--out", str(out)], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["broken.json", "local.json"]
    broken = json.loads((out / "broken.json").read_text())
    assert set(broken) == {"stack", "error"} and "servestack:cloud: 'moon' is not a known cloud" in broken["error"]
    local_result = json.loads((out / "local.json").read_text())
    assert local_result["cost"]["stack"] == "local" and local_result["cost"]["lines"] == []
    assert result_from_json(local_result, "local.json").verdict == "pass"


def test_the_readme_shows_this_comment() -> None:
    readme = (REPO / "README.md").read_text()
    quoted = "\n".join(f"> {line}" if line else ">" for line in EXPECTED.rstrip("\n").split("\n"))
    assert quoted in readme
