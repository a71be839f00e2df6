#!/bin/sh
# The SIP core's figures for docs/BENCHMARKS.md, beside the C daemon's:
# RSS with 256 phones (router build), CPU per REGISTER and the clean rate
# at 5,000/s (sipp), the OPTIONS round trip (closed loop), the handler's
# CPU and allocations per request, the flood, proxy and TCP load tests at
# full size, and the mips binary size.
# Usage: scripts/sip-figures.sh   (needs sipp; run on an idle machine)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== router build (amd64, scripts/router-build.sh)"
sh scripts/router-build.sh "$work/phonebookd"
go build -o "$work/ubus-broker" ./cmd/ubus-broker
mkdir -p bin && cp "$work/ubus-broker" bin/ubus-broker

echo "== 256 phones registered (sipp, 500/s)"
SHOW_MEMORY=1 PHONEBOOKD="$work/phonebookd" scripts/bench-register.sh 500 256

echo "== 20,000 REGISTERs at 5,000/s (sipp)"
PHONEBOOKD="$work/phonebookd" scripts/bench-register.sh 5000 20000

echo "== handler CPU and allocations per request; OPTIONS round trip"
go test -run XXX -bench 'Handle|OptionsRTT' -benchmem -count 3 ./sip/ | grep -E '^Benchmark'

echo "== load tests at full size (router build)"
go test -count=1 -run 'TestUDPFloodOptions|TestRegisterFloodPastCapacity|TestTCPBounded|TestProxyFloodRouterBuild' -v ./tests/ 2>&1 | grep -E 'load_test.go:[0-9]+: [0-9]' || true
go test -count=1 -run 'TestProxyFloodBounded' -v ./sip/ 2>&1 | grep -E 'answers:' || true

echo "== mips binary (GOARCH=mips GOMIPS=softfloat)"
CGO_ENABLED=0 GOOS=linux GOARCH=mips GOMIPS=softfloat go build -trimpath -ldflags '-s -w' -o "$work/phonebookd-mips" ./cmd/phonebookd
stat -c '%s bytes' "$work/phonebookd-mips"
