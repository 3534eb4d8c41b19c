"""Settings of the server, read once from the environment.

    MODEL_PATH                            the model directory (required)
    SERVESTACK_MODEL_NAME                 the served model id (default: the name in the directory's
                                          manifest.json, else the directory's name); a directory whose
                                          manifest names another model is refused
    SERVESTACK_MODEL_REVISION             the revision to serve: the directory's manifest must name it (a
                                          directory without a manifest is then refused)
    SERVESTACK_HOST, SERVESTACK_PORT      where to listen (default 0.0.0.0:8000)
    SERVESTACK_API_KEYS_FILE              the clients' keys (hashes) and limits, a JSON file reread when it
                                          changes (serving.keys); `Authorization: Bearer <key>` is required
    SERVESTACK_API_KEY                    without a keys file: when set and non-empty, this one key is required
                                          (probes and metrics stay open)
    SERVESTACK_LIMITS_STORE_URL           redis://... : the store the replicas share the clients' limits in
                                          (serving.limits); without it, this process counts alone
    SERVESTACK_METRICS_PORT               serve /metrics on this port only, not on the API's (default: the API's)
    SERVESTACK_MAX_BATCH_SIZE             sequences decoded together per step (default 16)
    SERVESTACK_MAX_QUEUE                  running + waiting requests allowed; beyond it, 429 (default 64)
    SERVESTACK_MAX_INPUT_TOKENS           longest prompt accepted, in tokens (default 2048)
    SERVESTACK_MAX_BODY_BYTES             largest request body accepted; beyond it, 413 (default 2 MiB)
    SERVESTACK_MAX_TOKENS                 upper bound of a request's max_tokens, and its default (default 512)
    SERVESTACK_REQUEST_TIMEOUT_SECONDS    a request still unfinished after this gets 504 (default 300)
    SERVESTACK_DRAIN_SECONDS              after SIGTERM, time allowed for requests in flight (default 30)
    SERVESTACK_STALL_SECONDS              readiness and liveness fail when the engine loop has not ticked
                                          for this long (default 60)
    SERVESTACK_REQUIRE_CUDA               1: a GPU is expected, and no usable CUDA stops the start (exit 1)
                                          instead of serving on the CPU (default 0)
    SERVESTACK_TORCH_THREADS              CPU threads for torch; 0 (default) means one per core, or one in
                                          all for models under 50M parameters
    SERVESTACK_LOG_LEVEL                  uvicorn/python log level (default info)
    SERVESTACK_LOG_FORMAT                 json (default: one JSON object per line on stdout) or text
                                          (serving.logs)
    SERVESTACK_LOG_PROMPTS                true: a request's log line carries its prompt or messages (default
                                          false: prompts are the clients' data)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving import manifest


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVESTACK_", extra="ignore", populate_by_name=True)

    model_path: Path = Field(validation_alias="MODEL_PATH")
    model_name: str = ""
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    model_revision: str | None = None
    api_key: SecretStr | None = None
    api_keys_file: Path | None = None
    limits_store_url: SecretStr | None = None
    metrics_port: int | None = Field(None, ge=1, le=65535)
    max_batch_size: int = Field(16, ge=1, le=1024)
    max_queue: int = Field(64, ge=1)
    max_input_tokens: int = Field(2048, ge=1)
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    max_tokens: int = Field(512, ge=1)
    request_timeout_seconds: float = Field(300.0, gt=0)
    drain_seconds: float = Field(30.0, ge=0)
    stall_seconds: float = Field(60.0, gt=0)
    torch_threads: int = Field(0, ge=0)
    require_cuda: bool = False
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["json", "text"] = "json"
    log_prompts: bool = False

    @field_validator("model_path")
    @classmethod
    def _is_model_dir(cls, value: Path) -> Path:
        if not (value / "config.json").is_file():
            raise ValueError(f"{value} is not a model directory (no config.json)")
        return value

    @field_validator("model_name")
    @classmethod
    def _matches_the_label(cls, value: str, info: ValidationInfo) -> str:
        label = model_label(info.data.get("model_path"))
        if value and label and value != label:
            raise ValueError(f"the model directory holds {label!r} (its manifest.json says so), not {value!r}")
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _is_a_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @property
    def served_model_name(self) -> str:
        return self.model_name or model_label(self.model_path) or self.model_path.name

    @property
    def key(self) -> str | None:
        """The API key, or None when auth is off."""
        value = self.api_key.get_secret_value() if self.api_key is not None else ""
        return value or None


def model_label(directory: Path | None) -> str | None:
    """The model a directory's manifest names, if it has a readable one (the server's start checks it
    whole: serving.manifest.check_served_model)."""
    if directory is None:
        return None
    try:
        found = manifest.read(directory)
    except (manifest.ManifestError, OSError):
        return None
    return found.name if found is not None else None


def env_name(field: str) -> str:
    """The environment variable behind a settings field."""
    return "MODEL_PATH" if field == "model_path" else f"SERVESTACK_{field.upper()}"


def describe(error: ValidationError) -> str:
    """One line per bad variable: its name, what is wrong and the value given."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        if field == "MODEL_PATH":
            field = "model_path"
        line = f"{env_name(field)}: {item['msg'].removeprefix('Value error, ')}"
        if item.get("type") != "missing":
            line += f" (got {item.get('input')!r})"
        lines.append(line)
    return "\n".join(lines)
