"""`python -m servestack.dashboard`'s arguments (the run itself is tests/serving/test_prometheus.py's)."""

from __future__ import annotations

import pytest

from servestack.dashboard import main


def test_a_run_too_short_to_draw_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--seconds", "5"])
    assert exit_.value.code == 2
    assert "--seconds must be at least 20, so that every panel has a few points (got 5)" in capsys.readouterr().err
