"""serving.settings: the environment read once, bad values named by their variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serving import manifest
from serving.settings import Settings, describe


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """A model directory with its manifest (the model's name and revision), as serving.models writes it."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    manifest.write(manifest.build(model, "tiny", "r1"), model)
    return model


def test_a_labelled_model_is_served_under_its_label(labelled: Path) -> None:
    assert Settings(model_path=labelled).served_model_name == "tiny"
    assert Settings(model_path=labelled, model_name="tiny").served_model_name == "tiny"


def test_a_labelled_model_is_not_served_under_another_name(labelled: Path) -> None:
    """An image baked with the tiny test model, deployed by a stack that names a real model, does not start."""
    with pytest.raises(ValidationError) as error:
        Settings(model_path=labelled, model_name="llama-3-8b")
    assert describe(error.value) == ("SERVESTACK_MODEL_NAME: the model directory holds 'tiny' (its "
                                     "manifest.json says so), not 'llama-3-8b' (got 'llama-3-8b')")


def test_an_unlabelled_model_is_served_under_its_directory_name(labelled: Path) -> None:
    (labelled / "manifest.json").unlink()
    assert Settings(model_path=labelled).served_model_name == "model"
    assert Settings(model_path=labelled, model_name="any").served_model_name == "any"


def test_limits_and_switches(labelled: Path) -> None:
    settings = Settings(model_path=labelled)
    assert (settings.max_body_bytes, settings.require_cuda) == (2 * 1024 * 1024, False)
    with pytest.raises(ValidationError, match="max_body_bytes"):
        Settings(model_path=labelled, max_body_bytes=10)
