# Barycenter Account — the whole set-up is `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
AXE_VERSION := 4.14.1
AXE := .cache/npm/node_modules/axe-core/axe.min.js
CHROMIUM := /usr/bin/chromium
# unit tests run in parallel processes (pytest-xdist), one per core
UNIT_WORKERS ?= auto

.PHONY: install run test unit e2e bench profile typecheck lint format chromium axe clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## run: serve http://localhost:8000 (and the admin API on 127.0.0.1:9091) with a demo user
run: install
	@mkdir -p data
	@test -s data/admin_token || (umask 077 && $(PY) -c "import secrets; print(secrets.token_urlsafe(32))" > data/admin_token)
	@$(VENV)/bin/barycenter-account db upgrade
	@echo "demo-password-123" | $(VENV)/bin/barycenter-account create-user demo --display-name "Demo User" --email demo@example.com --password-stdin --exists-ok
	@echo ""
	@echo "  User site:  http://localhost:8000   (sign in as demo / demo-password-123)"
	@echo "  Admin API:  http://127.0.0.1:9091/graphql"
	@echo "  Admin token: $$(cat data/admin_token)"
	@echo "  Mail:       $${BARYCENTER_SMTP_URL:+sent through BARYCENTER_SMTP_URL}$${BARYCENTER_SMTP_URL:-written as .eml files to $$(pwd)/data/mail/}"
	@echo "  e.g. curl -s http://127.0.0.1:9091/graphql -H \"Authorization: Bearer $$(cat data/admin_token)\" \\"
	@echo "         -H 'Content-Type: application/json' -d '{\"query\":\"{ user2faStatus(username: \\\"demo\\\") { requires2fa user2faEnabled effective2fa } }\"}'"
	@echo ""
	BARYCENTER_ADMIN_TOKEN=$$(cat data/admin_token) $(VENV)/bin/barycenter-account serve --port 8000 --admin-port 9091

## chromium: Debian's Chromium for the browser tests (never a browser download)
chromium:
	@test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

## axe: axe-core from npm, injected into pages by the accessibility checks
axe: $(AXE)
$(AXE):
	@mkdir -p .cache/npm
	npm install --silent --no-audit --no-fund --prefix .cache/npm axe-core@$(AXE_VERSION)

## test: unit tests, then end-to-end tests in Chromium
test: install chromium axe
	$(PY) -m pytest tests/unit -q -n $(UNIT_WORKERS)
	$(PY) -m pytest tests/e2e -q

unit: install
	$(PY) -m pytest tests/unit -q -n $(UNIT_WORKERS)

e2e: install chromium axe
	$(PY) -m pytest tests/e2e -q

## bench: throughput and latency, side by side with django-allauth (../shared/peers/allauth/)
## and a bare Litestar app; the table goes to bench/results/latest-*.md
bench: install
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	$(PY) -m bench.run

## profile: where a signed-in GET /account spends its CPU (ROUTE=second-factor|passkey too; ROUTE=section SECTION=activity: one section partial)
ROUTE ?= account
SECTION ?= activity
profile: install
	$(PY) -m bench.profile $(ROUTE) --section $(SECTION) --cprofile

## typecheck: mypy over web/ and models/ (settings in pyproject.toml)
typecheck: install
	$(VENV)/bin/mypy

## lint: ruff (rules and format) and the type checker
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
