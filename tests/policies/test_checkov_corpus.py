"""The Checkov comparison stays tied to the pack: each file of the corpus is a hostile case of the pack, and the
README's table lists every file with the pack's current verdict on it."""

from __future__ import annotations

from policies.rules import RULES
from policies.rules.stack_config import CONFIG_DIR
from tests.policies.checkov import compare


def test_every_corpus_file_is_a_hostile_case() -> None:
    verdicts = compare.pack_verdicts()
    missing = [p.name for p in compare.corpus() if p.stem not in verdicts]
    assert not missing, f"no hostile case of these ids: {missing}"
    assert set(compare.RULE_CHECKS) <= {r.name for r in RULES}
    assert {verdicts[p.stem][1] for p in compare.corpus()} == set(compare.RULE_CHECKS)


def test_the_readme_table_lists_the_corpus_with_the_pack_verdicts() -> None:
    verdicts = compare.pack_verdicts()
    readme = (CONFIG_DIR.parent / "README.md").read_text()
    rows = {}
    for line in readme.split("### Compared with Checkov", 1)[1].splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    assert set(rows) == {p.stem for p in compare.corpus()}
    for case, (_, rule, should, pack, _) in rows.items():
        expect, policy = verdicts[case]
        assert rule == f"`{policy}`" and should == ("pass" if expect == "pass" else "flag"), case
        assert pack == {"pass": "passes", "unknown": "cannot verify"}.get(expect, "flags"), case
