# Proxymage — `make demo` runs the system with a demo scenario; `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export UV_PYTHON_DOWNLOADS := never
include deploy/local/local.env
export PROXYMAGE_ENV_FILE := $(CURDIR)/deploy/local/local.env
UV ?= uv
PYTEST_ARGS ?=
STACK := deploy/local/stack.sh
SERVICES := deploy/local/services.sh
COMPOSE := $(UV) run --frozen podman-compose -f deploy/compose/compose.yaml
# Which servers the tests use: `local` (deploy/local's processes, the default) or `containers` (the images of
# `make images` through testcontainers, on the ports of deploy/containers/test-stack.env; pytest starts and
# removes them itself, so make neither starts nor stops the local stack then).
PROXYMAGE_TEST_STACK ?= local
export PROXYMAGE_TEST_STACK
# The smoke subset of the container mode (every peer: Kafka, FerretDB, both Orthanc with C-MOVEs, mTLS SMTP;
# the fetcher's end-to-end tests, MIRC stopped and restarted included).
CONTAINERS_SMOKE ?= tests/integration services/study-fetcher/tests/test_service_integration.py

.PHONY: help install up down status services test unit lint format topics seed demo bench images compose-up compose-down \
  containers-test containers-stack-test cluster-test cluster-up cluster-down helm-check chaos chaos-fast

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## Install the Debian packages (as root), uv (if missing) and the Python workspace from uv.lock
	@bash deploy/local/system-packages.sh
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet
	@bash deploy/local/oidc.sh install
	@echo "workspace installed in .venv"

up: install ## Install and start Kafka, FerretDB, Orthanc MIRC + VIEWER and SMTP on 127.0.0.1
	@bash $(STACK) up

down: ## Stop the services and every server the stack started
	@bash $(SERVICES) stop
	@bash $(STACK) down

status: ## Show each server's and service's state
	@bash $(STACK) status
	@bash $(SERVICES) status

topics: install ## Create every topic and its dead-letter topic (idempotent)
	@$(UV) run --frozen proxymage topics

seed: install ## Store the synthetic patients' studies into MIRC
	@$(UV) run --frozen proxymage-dev seed-pacs --seed 42

services: install ## Start the four services in the background
	@bash $(SERVICES) start

test: install ## Run every test against the real servers (starts the stack, stops it after; KEEP_STACK=1 keeps it; PROXYMAGE_TEST_STACK=containers: the images, via testcontainers)
	@if [ "$(PROXYMAGE_TEST_STACK)" = containers ]; then \
	  $(UV) run --frozen pytest $(PYTEST_ARGS); \
	else \
	  bash $(STACK) up; \
	  status=0; $(UV) run --frozen pytest $(PYTEST_ARGS) || status=$$?; \
	  if [ -z "$${KEEP_STACK:-}" ]; then bash $(SERVICES) stop; bash $(STACK) down; fi; \
	  exit $$status; \
	fi

unit: install ## Run the unit tests only (no servers)
	@$(UV) run --frozen pytest -m "not integration" $(PYTEST_ARGS)

chaos: install ## The fault suite on its own stack (deploy/chaos/chaos.env), one table; CHAOS_ARGS=--long: +10-min MIRC outage
	@$(UV) run --frozen python -m proxymage_dev.chaos $(CHAOS_ARGS)

chaos-fast: install ## The fault suite's fast subset (CI, under ~6 minutes)
	@$(UV) run --frozen python -m proxymage_dev.chaos --fast

bench: up ## Measure the figures the issues name (store, identity rules, latencies, retrieval vs movescu, viewer)
	@$(UV) run --frozen python -m proxymage_dev.bench.store_capacity
	@$(UV) run --frozen python bench/store_hot_paths.py
	@$(UV) run --frozen python -m proxymage_dev.bench.identity_matcher
	@$(UV) run --frozen python -m proxymage_dev.bench.study_fetcher
	@$(UV) run --frozen python -m proxymage_dev.bench.scale_out
	@$(UV) run --frozen python -m proxymage_dev.bench.gateway
	@$(UV) run --frozen python -m proxymage_dev.bench.viewer

lint: install ## ruff check, ruff format --check, mypy --strict on every src/, uv lock --check
	@$(UV) lock --check --quiet
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen mypy --strict shared/src services/identity-matcher/src services/study-fetcher/src \
	  services/expert-notifier/src services/gateway/src dev/src

format: install ## Apply ruff's fixes and formatting
	@$(UV) run --frozen ruff check --fix .
	@$(UV) run --frozen ruff format .

demo: up ## Start everything, seed MIRC and the services, and print where everything is (until `make down`)
	@$(UV) run --frozen proxymage topics
	@$(UV) run --frozen proxymage-dev seed-pacs --seed 42
	@bash $(SERVICES) start
	@$(UV) run --frozen proxymage-dev demo-scenario
	@echo
	@bash $(STACK) status
	@bash $(SERVICES) status
	@echo
	@echo "Operator console (3C):         http://127.0.0.1:$(PROXYMAGE_LOCAL_GATEWAY_HTTP_PORT)/console/  (token: demo-dcc-token)"
	@echo "Personal sign-in (OIDC):       3c.fictif / demo-3c, medecin.fictif / demo-medecin, lecture.fictif / demo-lecture  (provider $(PROXYMAGE_OIDC_ISSUER))"
	@echo "Demo meeting:                  http://127.0.0.1:$(PROXYMAGE_LOCAL_GATEWAY_HTTP_PORT)/console/meetings/"
	@echo "REST API (OpenAPI):            http://127.0.0.1:$(PROXYMAGE_LOCAL_GATEWAY_HTTP_PORT)/docs  (Authorization: Bearer demo-dcc-token)"
	@echo "Topics (AsyncAPI):             http://127.0.0.1:$(PROXYMAGE_LOCAL_GATEWAY_HTTP_PORT)/asyncapi"
	@echo "Viewer (OHIF, read-only):      opened by 'Visuel disponible' on an available study (same sign-in)"
	@echo "Simulated regional PACS:       http://127.0.0.1:$(PROXYMAGE_LOCAL_MIRC_HTTP_PORT)/app/explorer.html  (Orthanc MIRC, loopback only)"
	@echo "Received e-mails:              var/smtp/mailbox/"
	@echo "Everything keeps running until: make down"

images: ## Build every OCI image with podman: the four services, Kafka, FerretDB, Orthanc, SMTP (sizes at the end)
	@bash deploy/images/base.sh image
	@bash deploy/images/build.sh

compose-up: install ## Start the compose stack (images of `make images`); gateway on http://127.0.0.1:28080
	@bash deploy/compose/secrets.sh
	@$(COMPOSE) up -d
	@echo "Gateway: http://127.0.0.1:$${PROXYMAGE_COMPOSE_GATEWAY_PORT:-28080}/console/  (token: var/compose/secrets/dcc-token)"

compose-down: install ## Stop and remove the compose stack's containers (its named volumes are kept)
	@$(COMPOSE) down

containers-test: install ## Run the tests marked `containers` (podman, the images of `make images`; not in make test)
	@bash deploy/helm/check.sh tools
	@bash $(STACK) up
	@status=0; $(UV) run --frozen pytest -m containers $(PYTEST_ARGS) || status=$$?; \
	  if [ -z "$${KEEP_STACK:-}" ]; then bash $(SERVICES) stop; bash $(STACK) down; fi; \
	  exit $$status

containers-stack-test: install ## Smoke subset against the peers started from the images by testcontainers (podman)
	@PROXYMAGE_TEST_STACK=containers $(UV) run --frozen pytest $(CONTAINERS_SMOKE) $(PYTEST_ARGS)

cluster-up: install ## Start the 3-broker Kafka cluster (KRaft, RF 3, min ISR 2) on 127.0.0.1:19192-19194
	@bash deploy/local/kafka-cluster.sh up

cluster-down: ## Stop the 3-broker Kafka cluster (its data under var/kafka-cluster is kept)
	@bash deploy/local/kafka-cluster.sh down

cluster-test: install ## A broker stopped and one killed mid-flow on the 3-broker cluster: 0 lost, 0 doubled (not in make test)
	@bash deploy/local/ferretdb.sh start
	@bash deploy/local/kafka-cluster.sh up
	@status=0; $(UV) run --frozen pytest -m cluster -rP tests/cluster $(PYTEST_ARGS) || status=$$?; \
	  if [ -z "$${KEEP_CLUSTER:-}" ]; then bash deploy/local/kafka-cluster.sh down; fi; \
	  exit $$status

helm-check: install ## Helm chart: helm lint, helm template, schema validation (Kubernetes + KEDA), chart tests
	@bash deploy/helm/check.sh
	@$(UV) run --frozen pytest tests/helm/test_chart.py $(PYTEST_ARGS)
