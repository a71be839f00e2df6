# phonebookd developer Makefile. `make run` and `make test` are the two
# commands a newcomer needs (see README.md).

GO      ?= go
BIN     := bin
RUN     := $(CURDIR)/run
PKG     := github.com/aredn/phonebookd
VERSION ?= 0.1.0
RELEASE ?= 1
DIST    := dist
# Routers have ubus and no D-Bus; Debian hosts D-Bus and no ubus daemon.
ROUTER_TAGS ?= nodbus
DEBIAN_TAGS ?= noubus
# The router build's flags (tags, no inlining in the project's packages)
# are written once, in scripts/router-build.sh.
PREFIX  ?= /usr
DESTDIR ?=
# Router targets: opkg architecture and Go settings.
TARGETS := mips_24kc:mips:GOMIPS=softfloat \
           mipsel_24kc:mipsle:GOMIPS=softfloat \
           arm_cortex-a7_neon-vfpv4:arm:GOARM=7 \
           aarch64_cortex-a53:arm64: \
           x86_64:amd64:

.PHONY: all build test test-unit test-system vet fmt-check run cross ipk apk packages bench fuzz clean setup install-debian uninstall-debian sizes

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/phonebookd ./cmd/phonebookd
	$(GO) build -trimpath -o $(BIN)/ubus-broker ./cmd/ubus-broker

vet:
	$(GO) vet ./...
	$(GO) vet -tags faults ./...
	$(GO) vet -tags '$(ROUTER_TAGS)' ./...
	$(GO) vet -tags '$(DEBIAN_TAGS)' ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The Debian packages the tests use (as root or through sudo).
setup:
	scripts/setup.sh

# All tests: unit, vector replays, fuzz seeds, and the whole-daemon tests
# in tests/ (which build their own binaries, with and without the faults tag).
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 15m ./...

# The package tests alone, in seconds: -short skips the slow ones (load,
# bounds over many iterations) and the whole-daemon tests in tests/.
test-unit:
	$(GO) test -short -count=1 -timeout 5m ./...

# The whole-daemon tests in tests/ (they build their own binaries; some
# need root: privileges, network namespaces).
test-system:
	$(GO) test -race -count=1 -timeout 15m ./tests/

# Runs the daemon against the development broker with every path under
# ./run: no root, nothing written outside the checkout. Ctrl-C stops both.
run: build
	@mkdir -p $(RUN)/etc/config $(RUN)/tmp/.uci $(RUN)/www
	@[ -f $(RUN)/etc/config/phonebook ] || { \
		cp files/etc/config/phonebook $(RUN)/etc/config/phonebook; \
		u="$(BIN)/phonebookd uci -c $(RUN)/etc/config -t $(RUN)/tmp/.uci"; \
		$$u set phonebook.main.state_dir=$(RUN)/etc/phonebook && \
		$$u set phonebook.main.run_dir=$(RUN)/tmp/phonebook && \
		$$u set phonebook.main.www_dir=$(RUN)/www && \
		$$u set phonebook.main.apps_dir=$(RUN)/tmp/apps/phonebook && \
		$$u set phonebook.sip.listen=127.0.0.1:5060 && \
		$$u commit phonebook; }
	@echo "ubus: $(BIN)/phonebookd call -s $(RUN)/ubus.sock phonebook.health status"
	@$(BIN)/ubus-broker -s $(RUN)/ubus.sock & broker=$$!; \
	trap 'kill $$broker 2>/dev/null' EXIT INT TERM; \
	$(BIN)/phonebookd -c $(RUN)/etc/config -t $(RUN)/tmp/.uci -s $(RUN)/ubus.sock

# Stripped static binaries for every router target, with their sizes.
cross:
	@mkdir -p $(DIST)
	@for t in $(TARGETS); do \
		arch=$${t%%:*}; rest=$${t#*:}; goarch=$${rest%%:*}; extra=$${rest#*:}; \
		env GOOS=linux GOARCH=$$goarch $$extra scripts/router-build.sh $(DIST)/phonebookd_$$arch || exit 1; \
		printf '%-28s %9d bytes\n' phonebookd_$$arch $$(stat -c %s $(DIST)/phonebookd_$$arch); \
	done

# Installable packages for every router target, both formats from one
# source (files/, packaging/): .ipk for opkg (AREDN up to 4.26.1), .apk for
# apk-tools v3 (AREDN 4.26.7, OpenWrt 25.12; APK= names the apk binary).
ipk apk: cross
	@for t in $(TARGETS); do \
		arch=$${t%%:*}; \
		f=$$(scripts/mkpkg.sh $@ $$arch $(DIST)/phonebookd_$$arch $(VERSION) $(RELEASE) $(DIST)) || exit 1; \
		printf '%-56s %9d bytes\n' $$(basename $$f) $$(stat -c %s $$f); \
	done

packages: ipk apk

bench:
	$(GO) test -run XXX -bench . -benchmem ./...

# Short fuzzing of every parser of outside input.
fuzz:
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 30s ./uci
	$(GO) test -run XXX -fuzz FuzzValue -fuzztime 30s ./uci
	$(GO) test -run XXX -fuzz FuzzMessage -fuzztime 30s ./ubus
	$(GO) test -run XXX -fuzz FuzzBlobmsg -fuzztime 30s ./ubus
	$(GO) test -run XXX -fuzz FuzzParseJSONObject -fuzztime 30s ./ubus
	$(GO) test -run XXX -fuzz FuzzUnmarshal -fuzztime 30s ./internal/jsonread
	$(GO) test -run XXX -fuzz FuzzAppendString -fuzztime 30s ./internal/jsonwrite
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 30s ./directory
	$(GO) test -run XXX -fuzz FuzzReadResponse -fuzztime 30s ./httpc
	$(GO) test -run XXX -fuzz FuzzReadRequest -fuzztime 30s ./metrics
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 30s ./sip

# Debian and Raspberry Pi OS: the daemon (without the ubus front), its
# systemd unit, the D-Bus policy, and /etc/config/phonebook with Debian's
# directories (kept if it exists), plus the phonebook system user. Then:
#   sudo systemctl enable --now phonebookd
# DESTDIR installs into a staging root (no user, no systemctl).
install-debian:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '-s -w' -tags '$(DEBIAN_TAGS)' -o $(BIN)/phonebookd-debian ./cmd/phonebookd
	install -D -m 0755 $(BIN)/phonebookd-debian $(DESTDIR)$(PREFIX)/sbin/phonebookd
	install -D -m 0644 contrib/systemd/phonebookd.service $(DESTDIR)/lib/systemd/system/phonebookd.service
	install -D -m 0644 contrib/dbus/org.aredn.Phonebook1.conf $(DESTDIR)$(PREFIX)/share/dbus-1/system.d/org.aredn.Phonebook1.conf
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/phonebookd/README.md
	install -D -m 0644 contrib/prometheus/phonebook.rules.yml $(DESTDIR)$(PREFIX)/share/doc/phonebookd/phonebook.rules.yml
	install -D -m 0644 contrib/grafana/phonebook-dashboard.json $(DESTDIR)$(PREFIX)/share/doc/phonebookd/phonebook-dashboard.json
	@if [ ! -f $(DESTDIR)/etc/config/phonebook ]; then \
		install -D -m 0644 files/etc/config/phonebook $(DESTDIR)/etc/config/phonebook; \
		t=$$(mktemp -d); u="$(BIN)/phonebookd-debian uci -c $(DESTDIR)/etc/config -t $$t"; \
		$$u set phonebook.main.state_dir=/var/lib/phonebook && \
		$$u set phonebook.main.run_dir=/run/phonebook && \
		$$u set phonebook.main.www_dir=/var/lib/phonebook/www && \
		$$u set phonebook.main.apps_dir=/run/phonebook/apps && \
		$$u set phonebook.main.ubus=0 && \
		$$u commit phonebook; rc=$$?; rm -rf $$t; exit $$rc; \
	else echo "kept $(DESTDIR)/etc/config/phonebook"; fi
	@if [ -z "$(DESTDIR)" ]; then \
		getent passwd phonebook >/dev/null || useradd --system --user-group --no-create-home \
			--home-dir /var/lib/phonebook --shell /usr/sbin/nologin phonebook; \
		if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
		if [ -S /run/dbus/system_bus_socket ] && command -v dbus-send >/dev/null; then \
			dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig || true; fi; \
		echo "installed; start it: systemctl enable --now phonebookd"; \
	fi

# Removes what install-debian installed; keeps /etc/config/phonebook,
# /var/lib/phonebook (crash history) and the phonebook user, as a Debian
# package's remove (not purge) would.
uninstall-debian:
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then \
		systemctl disable --now phonebookd || true; fi
	rm -f $(DESTDIR)$(PREFIX)/sbin/phonebookd $(DESTDIR)/lib/systemd/system/phonebookd.service \
		$(DESTDIR)$(PREFIX)/share/dbus-1/system.d/org.aredn.Phonebook1.conf
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/phonebookd
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept /etc/config/phonebook, /var/lib/phonebook and the phonebook user"

# What each front costs: the mips binary with both, without D-Bus (the
# router build), without ubus, and without both (docs/BENCHMARKS.md).
sizes:
	@for tags in "" nodbus noubus "nodbus noubus"; do \
		env GOOS=linux GOARCH=mips GOMIPS=softfloat scripts/router-build.sh $(BIN)/size-probe "$$tags" || exit 1; \
		printf 'mips, tags %-14s %9d bytes\n' "'$$tags'" $$(stat -c %s $(BIN)/size-probe); \
	done; rm -f $(BIN)/size-probe

clean:
	rm -rf $(BIN) dist
