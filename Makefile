# driftstream: two commands do all set-up on a fresh machine.
#   make demo   the main job (brings the stack up and runs the end-to-end demo)
#   make test   the test suite
# Both are idempotent: a second run with nothing changed skips every set-up step.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEPS := .deps
APT_PACKAGES := prometheus prometheus-alertmanager chromium
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint bench clean-state stack-up stack-down dashboards

setup: $(VENV)/.installed $(DEPS)/kafka-libs/.installed $(DEPS)/apt.installed

# Debian packages: installed only when a binary is missing (apt is slow even when idle).
$(DEPS)/apt.installed:
	@mkdir -p $(DEPS)
	@if ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
	    || ! command -v chromium >/dev/null || ! command -v java >/dev/null || ! command -v mvn >/dev/null; then \
	  echo "setup: installing Debian packages $(APT_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends \
	    $(APT_PACKAGES) $$(command -v java >/dev/null || echo openjdk-17-jre-headless) $$(command -v mvn >/dev/null || echo maven); \
	fi
	@touch $@

# Apache Kafka jars from Maven Central, re-fetched only when the pom changes.
$(DEPS)/kafka-libs/.installed: infra/kafka/pom.xml $(DEPS)/apt.installed
	@echo "setup: fetching Kafka jars from Maven Central"
	@rm -rf $(DEPS)/kafka-libs && mkdir -p $(DEPS)/kafka-libs
	mvn -q -B -f infra/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	  -DoutputDirectory=$(CURDIR)/$(DEPS)/kafka-libs
	@touch $@

# The virtualenv, pinned by constraints.txt (a full lock), re-installed only when the pins change.
# uv installs in parallel and caches wheels: a fresh venv takes ~1 min, ~5 s from its cache.
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "setup: creating $(VENV) (pinned by constraints.txt)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(PY) -m pip install -q "uv==0.13.9"
	SSL_CERT_FILE=$${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt} UV_NATIVE_TLS=1 \
	  $(VENV)/bin/uv pip install -q --python $(PY) -c constraints.txt -e ".[dev]"
	@touch $@

demo: setup
	$(PY) -m driftstream.demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m benchmarks

dashboards: setup
	$(PY) -m driftstream.dashboards

stack-up: setup
	$(VENV)/bin/driftstream stack up

stack-down:
	$(VENV)/bin/driftstream stack down

clean-state: stack-down
	rm -rf .state
