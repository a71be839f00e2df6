# phonebookd developer Makefile. `make run` and `make test` are the two
# commands a newcomer needs (see README.md).

GO      ?= go
BIN     := bin
RUN     := $(CURDIR)/run
PKG     := github.com/aredn/phonebookd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test vet fmt-check run cross ipk bench fuzz clean

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
		$$u set phonebook.sip.listen=127.0.0.1:5060 && \
		$$u commit phonebook; }
	@echo "ubus: $(BIN)/phonebookd call -s $(RUN)/ubus.sock phonebook.health status"
	@$(BIN)/ubus-broker -s $(RUN)/ubus.sock & broker=$$!; \
	trap 'kill $$broker 2>/dev/null' EXIT INT TERM; \
	$(BIN)/phonebookd -c $(RUN)/etc/config -t $(RUN)/tmp/.uci -s $(RUN)/ubus.sock

bench:
	$(GO) test -run XXX -bench . -benchmem ./...

# Short fuzzing of every parser of outside input.
fuzz:
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 30s ./uci
	$(GO) test -run XXX -fuzz FuzzMessage -fuzztime 30s ./ubus
	$(GO) test -run XXX -fuzz FuzzBlobmsg -fuzztime 30s ./ubus
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 30s ./directory

clean:
	rm -rf $(BIN) dist
