#!/bin/sh
# The router build's memory footprint (issue 19): builds phonebookd as the
# package does (CGO_ENABLED=0, -trimpath, -ldflags '-s -w', tags nodbus),
# runs it with the development ubus broker in a private network namespace
# (unshare -n, loopback only; SIP on 127.0.0.1:5060 there), and samples
# /proc/PID/status, /proc/PID/smaps_rollup and the runtime's own figures
# (phonebook.health status, memory section) at:
#   idle 5 s after start, idle IDLE_SECONDS after start (default 600),
#   256 phones registered (sipp, 500/s),
#   20,000 REGISTERs at 5,000/s (sipp): at the end, 10 s and 60 s after,
#   100,000 OPTIONS from 1,000 sources in 127.0.0.0/8 (scripts/optflood,
#   10,000/s): at the end and 60 s after.
# Prints one markdown table, a row per sample point (MB unless named).
# Usage: scripts/footprint.sh [IDLE_SECONDS]   (as root: unshare -n; sipp)
# Settings: health.health_check_interval=1 (the runtime figures are the
# health snapshot, at most a second old), monitor.probe_phones=0 (the
# REGISTER path alone, as scripts/bench-register.sh), sip.max_bindings=
# MAX_BINDINGS (default 20480: every REGISTER of the 20,000 is a new phone
# that gets a binding, as in the issue's figures); the rest as shipped.
set -eu
idle=${1:-600}
top=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "${FOOTPRINT_WORK:-}" ]; then
	case $idle in '' | *[!0-9]*)
		echo "usage: scripts/footprint.sh [IDLE_SECONDS]" >&2
		exit 2
		;;
	esac
	command -v sipp >/dev/null || {
		echo "footprint: sipp is not installed" >&2
		exit 1
	}
	work=$(mktemp -d /tmp/footprint.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	cd "$top"
	# the router build, as Makefile's cross target makes it (amd64 here)
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -tags nodbus -o "$work/phonebookd" ./cmd/phonebookd
	go build -o "$work/ubus-broker" ./cmd/ubus-broker
	go build -o "$work/optflood" ./scripts/optflood
	echo "router build: $(stat -c %s "$work/phonebookd") bytes (amd64, nodbus, stripped); $(go version)" >&2
	# the same script again, in a network namespace of its own
	FOOTPRINT_WORK=$work unshare -n sh "$0" "$idle"
	exit
fi

work=$FOOTPRINT_WORK
bin=$work/phonebookd
sock=$work/ubus.sock
ip link set lo up
broker=
daemon=
trap 'kill $daemon $broker 2>/dev/null || true' EXIT

mkdir -p "$work/etc/config"
cp "$top/files/etc/config/phonebook" "$work/etc/config/"
u="$bin uci -c $work/etc/config -t $work/tmp/.uci"
$u set phonebook.main.state_dir="$work/state"
$u set phonebook.main.run_dir="$work/run"
$u set phonebook.main.www_dir="$work/www"
$u set phonebook.main.apps_dir="$work/apps"
$u set phonebook.sip.listen=127.0.0.1:5060
$u set phonebook.sip.max_bindings="${MAX_BINDINGS:-20480}"
$u set phonebook.monitor.probe_phones=0
$u set phonebook.health.health_check_interval=1
$u commit phonebook

"$work/ubus-broker" -s "$sock" 2>"$work/broker.log" &
broker=$!
i=0
while [ ! -S "$sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
"$bin" -c "$work/etc/config" -t "$work/tmp/.uci" -s "$sock" 2>"$work/daemon.log" &
daemon=$!
t0=$(date +%s)
i=0
until "$bin" call -s "$sock" phonebook.health check >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 100 ] || {
		echo "footprint: the daemon did not come up" >&2
		cat "$work/daemon.log" >&2
		exit 1
	}
	sleep 0.1
done

# until SECONDS after the daemon started, or after the time (s) given second
until_t() {
	now=$(date +%s)
	base=${2:-$t0}
	[ "$now" -ge $((base + $1)) ] || sleep $((base + $1 - now))
}

# kB of KEY in a /proc file of the daemon
kb() { awk -v k="$1:" '$1 == k {print $2; exit}' "/proc/$daemon/$2"; }

# a field of the health snapshot's memory section ("null" where unmeasured)
health() {
	sed -n '/"memory": {/,/}/p' "$work/health.json" |
		awk -v k="\"$1\":" -v f="$2" '$1 == k {v = $2; sub(/,$/, "", v); if (v == "null") print v; else printf f, v; exit}'
}

mb() { awk -v v="$1" 'BEGIN {printf "%.2f", v / 1024}'; }

table=$work/table.md
cat >"$table" <<'HEAD'
| point | t (s) | VmRSS | RssAnon | RssFile | VmHWM | Pss | Private_Dirty | threads | heap live | heap objects | Go total | stacks (KB) | goroutines |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HEAD

# one row of the table
sample() {
	"$bin" call -s "$sock" phonebook.health status >"$work/health.json"
	printf '| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" $(($(date +%s) - t0)) \
		"$(mb "$(kb VmRSS status)")" "$(mb "$(kb RssAnon status)")" "$(mb "$(kb RssFile status)")" \
		"$(mb "$(kb VmHWM status)")" "$(mb "$(kb Pss smaps_rollup)")" "$(mb "$(kb Private_Dirty smaps_rollup)")" \
		"$(awk '$1 == "Threads:" {print $2}' "/proc/$daemon/status")" \
		"$(health heap_mb %.2f)" "$(health heap_objects_mb %.2f)" "$(health go_total_mb %.2f)" "$(health stack_kb %d)" "$(health goroutines %d)" >>"$table"
	tail -1 "$table" >&2
}

# USERS FIRST N RATE: sipp registers N users from FIRST at RATE per second
register() {
	{
		echo SEQUENTIAL
		seq "$2" $(($2 + $3 - 1))
	} >"$work/users.csv"
	sipp -sf "$top/tests/testdata/register.xml" -inf "$work/users.csv" -m "$3" -r "$4" -l 2000 \
		-i 127.0.0.1 -nostdin -timeout 120s 127.0.0.1:5060 >"$work/sipp-$1.out" 2>&1 || true
	echo "$1: sipp $(grep -E 'Successful call' "$work/sipp-$1.out" | tail -1 | awk '{print $(NF)}') successful, $(grep -E 'Failed call' "$work/sipp-$1.out" | tail -1 | awk '{print $(NF)}') failed" >>"$work/notes"
}

: >"$work/notes"
until_t 5
sample "idle, 5 s"
until_t "$idle"
sample "idle, $idle s"

register phones 1000 256 500
sleep 1
sample "256 phones registered"

register flood 100000 20000 5000
sample "20,000 REGISTERs at 5,000/s: end"
t1=$(date +%s)
until_t 10 "$t1"
sample "... 10 s after"
until_t 60 "$t1"
sample "... 60 s after"

echo "options: optflood $("$work/optflood" -n 100000 -sources 1000 -rate 10000 127.0.0.1:5060)" >>"$work/notes"
sample "100,000 OPTIONS from 1,000 sources: end"
t1=$(date +%s)
until_t 60 "$t1"
sample "... 60 s after"

"$bin" call -s "$sock" phonebook status | grep -o '"registered_users": [0-9]*' >>"$work/notes" || true
cat "$table"
echo
sed 's/^/- /' "$work/notes"
