# The original Flink job's make targets, for pageviews. Each target is one line of `make help`.
# The commands live in scripts/ (what CI and people run); this file only names them, so the
# build command, for one, is written once: in scripts/build.

# Override on the command line, e.g. `make run COMPOSE=docker-compose` or `make docker-images DOCKER=podman`.
DOCKER ?= docker
COMPOSE ?= docker compose
IMAGE ?= pageviews:latest
# Where scripts/build puts the binaries (honours CARGO_TARGET_DIR).
BIN_DIR := $(shell scripts/build --bin-dir)

.DEFAULT_GOAL := help
.PHONY: help clean build test docker-images run all sql stack stack-down stack-status

help: ## list the targets (this text)
	@echo "usage: make TARGET"
	@awk 'BEGIN { FS = ":.*## " } /^[a-z-]+:.*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

clean: ## delete the build output (cargo clean); ./data and running stacks are left alone
	cargo clean

build: ## build both release binaries, pageviews and pageviews-sql (scripts/build)
	scripts/build

test: ## run every test, as CI does (scripts/test; installs what a fresh machine lacks)
	scripts/test

docker-images: ## build the container image (pageviews:latest) from the Dockerfile
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make: '$(DOCKER)' reaches no container engine; 'make stack' runs the same topology natively" >&2; exit 1; }
	$(DOCKER) build -t $(IMAGE) .

run: ## start the whole stack in containers from compose.yaml (stop it: docker compose down)
	@# The pipeline writes ./data as you, so that make sql and your tools can read and delete it.
	mkdir -p data
	PAGEVIEWS_UID=$$(id -u) PAGEVIEWS_GID=$$(id -g) $(COMPOSE) up --build --detach
	@echo "pageviews http://localhost:9249/api/status"
	@echo "prometheus http://localhost:9090"
	@echo "grafana http://localhost:3000 (admin/admin)"
	@echo "kafka localhost:9092"

all: build docker-images ## build the binaries and the container image

sql: build ## open the SQL shell on the tables in ./data
	$(BIN_DIR)/pageviews sql --output ./data

stack: ## run Kafka, datagen, the pipeline and Prometheus natively, no containers (scripts/stack up)
	scripts/stack up

stack-down: ## stop what 'make stack' started (scripts/stack down)
	scripts/stack down

stack-status: ## print the native stack's addresses; fails when a part is down (scripts/stack status)
	scripts/stack status
