# iptraf-mp: `make run` and `make test` install what a fresh Debian machine lacks, then run.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := libpcap-dev tshark tcpdump tmux iptraf-ng nfdump tcpreplay iproute2 procps
STAMP := $(VENV)/.installed

.PHONY: all deps venv run test lint bench fuzz clean

all: test

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# the packaged collector's service must not hold port 2055 or interfere with tests
	@-$(SUDO) systemctl disable --now nfdump >/dev/null 2>&1 || true

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: deps $(STAMP)

run: venv
	$(BIN)/iptraf-mp -i all

lint: venv
	$(BIN)/ruff check .

test: venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q -ra

bench: venv
	$(BIN)/python bench/run_all.py

fuzz: venv
	FUZZ_FRAMES=10000000 $(BIN)/pytest -q tests/test_fuzz.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
