# The two commands a newcomer needs: `make run` and `make test`. Both run `setup`
# first, which is idempotent and fast when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONF ?= vcd.conf.example

# Debian packages the project needs at build, run or test time.
APT_PACKAGES := python3 python3-venv python3-dev gcc pkg-config librrd-dev rrdtool \
	busybox-static bzip2 e2fsprogs iproute2 util-linux zstd xz-utils debootstrap \
	librpc-xml-perl libcap2-bin procps openssl libseccomp2

.PHONY: setup run test bench clean apt
setup: $(VENV)/.installed

# Installs only what is missing, so a second run costs one dpkg query.
$(VENV)/.apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.apt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

run: setup
	$(BIN)/python -m vcd.firstrun -c $(CONF)
	exec $(BIN)/vcd -f -c $(CONF)

test: setup
	$(BIN)/python -m pytest tests

# Benchmarks compare against other tools; those are only needed here, not for run/test.
BENCH_PACKAGES := wrk lxc

bench: setup
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
