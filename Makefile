# xdplb: `make demo` and `make test` install what they need (Debian packages, a venv from Debian's python3
# with system site-packages for bcc, the project with its test extras), then run. Both are idempotent.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DEBIAN_PACKAGES := python3 python3-venv python3-dev gcc libc6-dev util-linux python3-bpfcc libbpfcc libbpf1 linux-headers-amd64 bird2 iproute2 tcpdump prometheus curl chromium
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install test lint demo bench-dataplane bench-healthchecks bench-bgp bench-api bench-scale bench-restart bench-console clean

install: $(VENV)/.installed

$(VENV)/.debian: Makefile
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "debian packages: installing" $$missing; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@# Debian's own python3, not whatever comes first on PATH: bcc lives in its dist-packages.
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@touch $@

$(VENV)/.installed: $(VENV)/.debian pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	$(PY) -c 'import bcc' || { echo "bcc does not import from $(PY): is python3-bpfcc installed?" >&2; exit 1; }
	@touch $@

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/xdplb demo

bench-dataplane: install
	$(PY) benchmarks/bench_dataplane.py

bench-healthchecks: install
	$(PY) benchmarks/bench_healthchecks.py

bench-bgp: install
	$(PY) benchmarks/bench_bgp.py

bench-api: install
	$(PY) benchmarks/bench_api.py

bench-scale: install
	$(PY) benchmarks/bench_scale.py $(BENCH_ARGS)

bench-restart: install
	$(PY) benchmarks/bench_restart.py $(BENCH_ARGS)

bench-console: install
	$(PY) benchmarks/bench_console.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
