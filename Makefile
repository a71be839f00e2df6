# phonebookd developer Makefile. `make run` and `make test` are the two
# commands a newcomer needs (see README.md).

GO      ?= go
BIN     := bin
RUN     := $(CURDIR)/run
PKG     := github.com/aredn/phonebookd
VERSION ?= 0.1.0
RELEASE ?= 1
DIST    := dist
# Router targets: opkg architecture and Go settings.
TARGETS := mips_24kc:mips:GOMIPS=softfloat \
           mipsel_24kc:mipsle:GOMIPS=softfloat \
           arm_cortex-a7_neon-vfpv4:arm:GOARM=7 \
           aarch64_cortex-a53:arm64: \
           x86_64:amd64:

.PHONY: all build test vet fmt-check run cross ipk apk packages bench fuzz clean setup

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/phonebookd ./cmd/phonebookd
	$(GO) build -trimpath -o $(BIN)/ubus-broker ./cmd/ubus-broker

vet:
	$(GO) vet ./...
	$(GO) vet -tags faults ./...

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
		env CGO_ENABLED=0 GOOS=linux GOARCH=$$goarch $$extra $(GO) build -trimpath -ldflags '-s -w' \
			-o $(DIST)/phonebookd_$$arch ./cmd/phonebookd || exit 1; \
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
	$(GO) test -run XXX -fuzz FuzzMessage -fuzztime 30s ./ubus
	$(GO) test -run XXX -fuzz FuzzBlobmsg -fuzztime 30s ./ubus
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 30s ./directory
	$(GO) test -run XXX -fuzz FuzzReadResponse -fuzztime 30s ./directory
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 30s ./sip

clean:
	rm -rf $(BIN) dist
