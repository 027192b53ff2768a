# iptraf-mp: `make run` and `make test` install what a fresh Debian machine lacks, then run.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Every program the tests, `make run` and `make bench` run, by the package that holds it:
# ping (iputils-ping), ip (iproute2), ps/pkill/sysctl (procps), capinfos/editcap
# (wireshark-common), setpriv/taskset (util-linux), mount/umount (mount), callgrind (valgrind),
# chromium (the browser test of `iptraf-mp serve`),
# and a compiler with the Python headers for packages that build extensions.
APT_PACKAGES := libpcap-dev tshark wireshark-common tcpdump tmux iptraf-ng nfdump tcpreplay \
	iproute2 iputils-ping procps util-linux mount coreutils sqlite3 valgrind \
	build-essential python3-dev chromium
STAMP := $(VENV)/.installed
BUILT := $(VENV)/.built
# What the compiled core is built from (setup.py): an edit rebuilds it before the next run
CORE_SRC := $(wildcard iptraf_mp/core/*.py iptraf_mp/core/*.pxd) setup.py
# The in-process differential tests also run on the source itself (test_compiled.py
# compares the two builds' output on every capture, the large synflood one included)
TWIN_TESTS := tests/test_fastpath.py tests/test_split.py tests/test_fastindex.py tests/test_rank.py \
	tests/test_snapshot.py \
	tests/test_jsonline.py

.PHONY: all deps venv build run test lint bench fuzz clean

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
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77' 'cython>=3.1,<3.4'
	$(BIN)/pip install -q -e '.[test,web]'
	touch $(STAMP)

# The compiled core, in place beside its source (`pip install -e .` built it once; this
# rebuilds what changed). Without a compiler it stays interpreted and says so in one line.
$(BUILT): $(STAMP) $(CORE_SRC)
	$(BIN)/python setup.py -q build_ext --inplace -j 2
	touch $(BUILT)

build: deps $(BUILT)

venv: deps $(STAMP) $(BUILT)

# Live on every interface; without the right to capture (root or CAP_NET_RAW) it says so in
# one line and shows the demo recording instead, so a first run always shows the monitor.
run: venv
	@if $(BIN)/python -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()' \
	    2>/dev/null; then \
	  exec $(BIN)/iptraf-mp -i all; \
	else \
	  echo "iptraf-mp: no permission to capture (run as root or give $(BIN)/python CAP_NET_RAW): showing the demo recording fixtures/demo.pcapng"; \
	  exec $(BIN)/iptraf-mp -r fixtures/demo.pcapng; \
	fi

lint: venv
	$(BIN)/ruff check .

test: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/pytest -q -ra --durations=12
	IPTRAF_MP_INTERPRETED=1 $(BIN)/pytest -q -ra $(TWIN_TESTS) -k "not synflood"

bench: venv
	$(BIN)/python bench/run_all.py

fuzz: venv
	FUZZ_FRAMES=10000000 $(BIN)/pytest -q tests/test_fuzz.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
	rm -f iptraf_mp/core/*.so iptraf_mp/core/*.c iptraf_mp/core/_digests.py
