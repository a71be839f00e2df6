#!/bin/sh
# The router build as the packages ship it: the one place its Go flags are
# written (Makefile's cross and sizes targets, scripts/footprint.sh and the
# whole-daemon tests build through it; Makefile.openwrt states the same
# flags in OpenWrt's terms, GO_PKG_TAGS and GO_PKG_GCFLAGS, and
# TestRouterBuildFlagsAgree checks they match).
#   -tags nodbus: routers have ubus, not D-Bus.
#   -gcflags github.com/aredn/...=-l: no inlining in the project's own
#     packages, -262 KB on mips at a CPU cost inside the run-to-run spread
#     (docs/BENCHMARKS.md).
#   -trimpath -ldflags '-s -w', CGO_ENABLED=0: static, stripped.
# Usage: scripts/router-build.sh OUT [TAGS [PKG]]
#   GOOS, GOARCH, GOMIPS, GOARM come from the environment (the host's
#   architecture when unset); TAGS replaces nodbus (Makefile's sizes);
#   PKG replaces ./cmd/phonebookd (scripts/footprint.sh builds its Go
#   floor, ./scripts/floorprog, with the same flags).
#   SYMBOLS=1 in the environment leaves out the -s -w of -ldflags: the twin
#   with symbols that scripts/runtimemem reads a running stripped build
#   with (with -trimpath both load the same bytes at the same addresses).
set -eu
[ $# -ge 1 ] || {
	echo "usage: scripts/router-build.sh OUT [TAGS [PKG]]" >&2
	exit 2
}
out=$1
tags=${2-nodbus}
pkg=${3-./cmd/phonebookd}
# one go build line for both (TestRouterBuildFlagsAgree reads its flags)
ldflags='-s -w'
[ -z "${SYMBOLS:-}" ] || ldflags=
cd "$(dirname "$0")/.."
CGO_ENABLED=0 exec go build -trimpath -ldflags "$ldflags" -gcflags 'github.com/aredn/...=-l' -tags "$tags" -o "$out" "$pkg"
