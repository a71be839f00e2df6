#!/bin/sh
# The router binary's size by package (issue 19, point 3): builds the mips
# (softfloat) router build stripped and unstripped, packs the stripped one
# as an .ipk, and sums `go tool nm -size` of the unstripped one by package
# (KB). GCFLAGS= adds -gcflags (scripts/router-build.sh's -gcflags is what the
# packages ship). With -syms FILE, only sums FILE (any unstripped Go
# binary).
# Usage: [GCFLAGS=...] scripts/sizes-by-package.sh [OUTDIR] | -syms FILE
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = -syms ]; then
	syms=$2
else
	out=${1:-$(mktemp -d)}
	mkdir -p "$out"
	syms=$out/pb-syms
	cd "$top"
	export CGO_ENABLED=0 GOOS=linux GOARCH=mips GOMIPS=softfloat
	go build -trimpath -ldflags '-s -w' -gcflags "${GCFLAGS:-}" -tags nodbus -o "$out/pb" ./cmd/phonebookd
	go build -trimpath -gcflags "${GCFLAGS:-}" -tags nodbus -o "$syms" ./cmd/phonebookd
	unset GOOS GOARCH GOMIPS
	ipk=$(scripts/mkpkg.sh ipk mips_24kc "$out/pb" 0 1 "$out")
	echo "stripped mips binary: $(stat -c %s "$out/pb") B; .ipk: $(stat -c %s "$ipk") B; unstripped: $(stat -c %s "$syms") B"
fi
# A symbol's package: the import path up to the first dot after the
# last slash, type arguments aside ("go:" and "type:" are the runtime's
# tables). Symbols in .bss and .noptrbss (zero-filled: address space, not
# file; e.g. the FIPS DRBG's 32 MB buffer) are left out.
bss=$(readelf -SW "$syms" | awk '$2 == ".bss" { print $4 }')
go tool nm -size -sort size "$syms" | awk -v bss="$bss" '
	BEGIN { lim = 0; for (i = 1; i <= length(bss); i++) lim = lim * 16 + index("0123456789abcdef", substr(bss, i, 1)) - 1 }
	{ a = 0; for (i = 1; i <= length($1); i++) a = a * 16 + index("0123456789abcdef", substr($1, i, 1)) - 1
	  if (a >= lim) next
	  name = $4; for (i = 5; i <= NF; i++) name = name " " $i
	  if (name ~ /^go:/) pkg = "go:"; else if (name ~ /^type:/) pkg = "type:"
	  else { p = name; sub(/\[.*/, "", p); sub(/\(.*/, "", p); n = split(p, parts, "/"); last = parts[n]
	         sub(/\..*/, "", last); pkg = ""; for (i = 1; i < n; i++) pkg = pkg parts[i] "/"; pkg = pkg last }
	  sum[pkg] += $2; total += $2 }
	END { for (p in sum) printf "%-48s %8.1f\n", p, sum[p] / 1024; printf "%-48s %8.1f\n", "TOTAL", total / 1024 }' |
	sort -k2 -n -r
