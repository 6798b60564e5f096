# The two commands a newcomer needs: `make run` and `make test`. Both run `setup`
# first, which is idempotent and fast when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONF ?= vcd.conf.example
# where `make run` links the programs, so `vcc list` works in any shell
BINDIR ?= /usr/local/bin
PROGRAMS := vcd vstatd vcc vce vgc vcdadm vshelper
PANEL := vcd/panel

# Debian packages the project needs at build, run or test time.
APT_PACKAGES := python3 python3-venv python3-dev gcc libc6-dev pkg-config librrd-dev rrdtool \
	busybox-static bzip2 e2fsprogs iproute2 util-linux zstd xz-utils debootstrap \
	librpc-xml-perl libcap2-bin procps openssl libseccomp2 nodejs chromium chromium-driver \
	$(INTEROP_PACKAGES)

# The XML-RPC clients of other languages tests/test_interop_clients.py drives (download /
# installed size on Debian 12): Ruby's xmlrpc (6 MB / 26 MB with ruby), Perl's
# Frontier::Client (30 KB), PHP's xmlrpc extension (2.7 MB / 15 MB with php-cli), xmlrpc-c
# for a C client gcc compiles at test time (370 KB), Java's aXMLRPC (42 KB) run by the JDK's
# source launcher (default-jdk-headless: 113 MB / 265 MB, the one big item). Node's client
# comes from npm (tests/interop_clients/node, pinned in its package-lock.json).
INTEROP_PACKAGES := ruby ruby-xmlrpc libfrontier-rpc-perl php-cli php-xmlrpc \
	libxmlrpc-core-c3-dev libaxmlrpc-java default-jdk-headless
INTEROP_NODE := tests/interop_clients/node
# The C init forker (libvserver/native/vsinit.c): without it the supervisor clones every
# init out of its Python forker, a few milliseconds slower a start (issue 13).
NATIVE_FORKER := libvserver/native/vsinit

.PHONY: setup run links test bench clean apt
setup: $(VENV)/.installed $(NATIVE_FORKER) $(PANEL)/dist/.built \
	$(INTEROP_NODE)/node_modules/.installed

$(NATIVE_FORKER): $(NATIVE_FORKER).c $(VENV)/.apt
	gcc -O2 -Wall -Wextra -Werror -o $@ $<

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

# The web panel (vcd/panel): pinned npm packages (package-lock.json) and its sources,
# bundled into vcd/panel/dist, which vcd serves. npm comes with NodeSource's nodejs;
# Debian's nodejs needs Debian's npm beside it.
$(PANEL)/dist/.built: $(PANEL)/package.json $(PANEL)/package-lock.json $(PANEL)/build.mjs \
		$(wildcard $(PANEL)/src/*) $(VENV)/.apt
	@command -v npm >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	cd $(PANEL) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	@touch $@

$(INTEROP_NODE)/node_modules/.installed: $(INTEROP_NODE)/package.json \
		$(INTEROP_NODE)/package-lock.json $(PANEL)/dist/.built  # the panel's recipe brings npm
	cd $(INTEROP_NODE) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# vcd and vstatd in the foreground, side by side: Ctrl-C (or SIGTERM to make) stops both.
run: setup links
	$(BIN)/python -m vcd.firstrun -c $(abspath $(CONF))
	@echo "vcd and vstatd start now; Ctrl-C stops both. In another shell (as root): vcc list"
	@$(BIN)/vstatd -f -c $(abspath $(CONF)) & vstatd=$$!; \
	trap 'kill -TERM $$vstatd 2>/dev/null; wait $$vstatd' EXIT; \
	trap 'exit 130' INT TERM; \
	$(BIN)/vcd -f -c $(abspath $(CONF))

# A link per program in BINDIR (an existing file that is not our link is left alone).
links: setup
	@mkdir -p $(BINDIR)
	@for p in $(PROGRAMS); do \
		target=$$(readlink -f $(BIN)/$$p); link=$(BINDIR)/$$p; \
		if [ -e "$$link" ] && [ ! -L "$$link" ]; then \
			echo "$$link exists and is not a link: not replaced (use $(BIN)/$$p)"; \
		else ln -sfn "$$target" "$$link"; fi; \
	done
	@echo "vcd's programs are linked in $(BINDIR) (or use: . $(VENV)/bin/activate)"

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
	rm -rf $(VENV) build *.egg-info $(PANEL)/node_modules $(PANEL)/dist \
		$(INTEROP_NODE)/node_modules
