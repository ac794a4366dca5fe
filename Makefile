# hive images and tests. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_RUN = $(COMPOSE) -f images/compose.yaml -p hive
# compose checks every service's secret file, so both exist before any compose command.
SECRETS = images/secrets/agent_db_password images/secrets/genie_db_password
# Seconds `make agent`/`make genie` wait for Docker to report the container healthy.
HEALTHY_TIMEOUT ?= 300

.PHONY: help test lint fuzz lint-images images base-image \
        agent agent-stop agent-logs genie genie-stop genie-logs

help:
	@echo "make agent | genie            build, start, wait until healthy, print the URLs"
	@echo "make agent-stop | genie-stop  stop and remove the container (the data volume stays)"
	@echo "make agent-logs | genie-logs  follow the container's log"
	@echo "make test                     fmt, clippy, cargo test --locked (unit, host PostgreSQL, Docker, image lint)"
	@echo "make lint-images              hadolint the Dockerfiles, validate deploy/kubernetes"
	@echo "make images                   build both images"
	@echo "make bench | bench-short      hivesup against supervisord, s6, tini, dumb-init (see README, Performance)"
	@echo "make fuzz [FUZZ_SECS=600]     fuzz the config loader (README, Reliability); FUZZ_SEED=N replays a run"
	@echo "make agent-backup | genie-backup  pg_dump + roles of the running container into ./backups (README, Data)"
	@echo "make agent-restore FILE=...       restore a backup into the running container (genie-restore too)"
	@echo "make chaos | chaos-short      faults under write load, 0 acked rows lost (30 rounds | one per kind; README, Reliability)"

# The README's test command: format, lint, then every test (unit, host PostgreSQL,
# Docker engine; hadolint and kubernetes-validate run as tests too).
test: lint
	cargo test --locked

# The config fuzzer for FUZZ_SECS seconds (the normal test run does 3), optimised build.
FUZZ_SECS ?= 600
fuzz:
	HIVESUP_FUZZ_SECS=$(FUZZ_SECS) $(if $(FUZZ_SEED),HIVESUP_FUZZ_SEED=$(FUZZ_SEED)) \
	  cargo test --locked --profile fuzz --test fuzz_config -- --nocapture

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

lint-images:
	hadolint Dockerfile.agent Dockerfile.genie
	kubernetes-validate --strict deploy/kubernetes/agent.yaml deploy/kubernetes/genie.yaml

base-image:
	@bash images/base-image.sh

images: base-image
	docker build -f Dockerfile.agent -t hive-agent:latest .
	docker build -f Dockerfile.genie -t hive-genie:latest .

# One line, then stop, when no engine answers (before any recursive make adds noise).
ENGINE = docker info >/dev/null 2>&1 || { echo "make: no Docker engine answers (docker info failed): start Docker, or check DOCKER_HOST and your permissions"; exit 1; }

agent:
	@$(ENGINE) && $(MAKE) --no-print-directory _up SVC=agent API_PORT=38886 HEALTH_PORT=38887
genie:
	@$(ENGINE) && $(MAKE) --no-print-directory _up SVC=genie API_PORT=48886 HEALTH_PORT=48887
agent-stop: $(SECRETS)
	@$(ENGINE) && $(COMPOSE_RUN) rm --stop --force agent
genie-stop: $(SECRETS)
	@$(ENGINE) && $(COMPOSE_RUN) rm --stop --force genie
agent-logs:
	@$(ENGINE) && docker logs --follow hive-agent
genie-logs:
	@$(ENGINE) && docker logs --follow hive-genie

.PHONY: _up

# The password secrets are generated once per checkout, outside git, readable by the
# container's api user (compose bind-mounts it with these permissions).
images/secrets/%_db_password:
	@install -d -m 0700 images/secrets
	@umask 022 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >$@
	@echo "make: generated the database password in $@"

_up: $(SECRETS)
	@bash images/base-image.sh
	$(COMPOSE_RUN) up -d --build $(SVC)
	@deadline=$$((SECONDS + $(HEALTHY_TIMEOUT))); \
	while :; do \
	  status=$$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' hive-$(SVC) 2>/dev/null); \
	  case "$$status" in \
	    healthy) break ;; \
	    exited|dead|unhealthy) echo "make: hive-$(SVC) is $$status; last log lines:"; docker logs --tail 30 hive-$(SVC); exit 1 ;; \
	  esac; \
	  if (( SECONDS >= deadline )); then echo "make: hive-$(SVC) not healthy after $(HEALTHY_TIMEOUT)s (status: $$status)"; exit 1; fi; \
	  sleep 1; \
	done
	@echo "hive-$(SVC) is healthy:"
	@echo "  API     http://localhost:$(API_PORT)/api/v1/health"
	@echo "  hivesup http://localhost:$(HEALTH_PORT)/health  (/status, /metrics, /livez, /readyz)"
	@echo "  stop: make $(SVC)-stop   logs: make $(SVC)-logs"

# Data (README, "Data"): scripts/data.sh does the work through the Docker CLI.
#   make agent-backup [CONTAINER=hive-agent] [BACKUP_DIR=backups]
#   make agent-backup FROM=postgresql://USER@HOST:PORT/DB [NETWORK=net] [IMAGE=hive-agent:latest | PG_BINDIR=dir]
#   make agent-restore FILE=backups/hive-agent-TIMESTAMP.dump [CONTAINER=hive-agent]
BACKUP_DIR ?= backups
.PHONY: agent-backup genie-backup agent-restore genie-restore
agent-backup agent-restore: SVC = agent
genie-backup genie-restore: SVC = genie
agent-backup genie-backup:
	@$(ENGINE) && bash scripts/data.sh backup --dir '$(BACKUP_DIR)' \
	  $(if $(FROM),--from '$(FROM)' --name '$(or $(NAME),hive-$(SVC))' \
	    $(if $(PG_BINDIR),--bindir '$(PG_BINDIR)',--image '$(or $(IMAGE),hive-$(SVC):latest)' $(if $(NETWORK),--network '$(NETWORK)')), \
	    --container '$(or $(CONTAINER),hive-$(SVC))')
agent-restore genie-restore:
	@$(ENGINE) && bash scripts/data.sh restore --container '$(or $(CONTAINER),hive-$(SVC))' --file '$(FILE)'

# Chaos with acked-write accounting (benches/chaos.py, README "Chaos"): the agent image,
# under its own tag, against kill -9, SIGSTOP, docker stop/kill, an output flood and a
# zombie storm while a writer inserts rows. Exits 1 if an invariant fails (lost acked row,
# leftover zombie, surviving process, recovery after a clean stop, no recovery in 90 s).
CHAOS_IMAGE ?= hive-agent:chaos
CHAOS_OUT ?= $(or $(CARGO_TARGET_DIR),target)/chaos
CHAOS_ARGS ?=

.PHONY: chaos chaos-short chaos-image

chaos-image: base-image
	@$(ENGINE)
	docker build -q -f Dockerfile.agent -t $(CHAOS_IMAGE) .

chaos: chaos-image
	python3 benches/chaos.py --image $(CHAOS_IMAGE) --out $(CHAOS_OUT) $(CHAOS_ARGS)

chaos-short: chaos-image
	python3 benches/chaos.py --short --image $(CHAOS_IMAGE) --out $(CHAOS_OUT) $(CHAOS_ARGS)

include benches/bench.mk
