#!/bin/sh
# REGISTER throughput: sipp sends N REGISTERs (distinct users) at RATE per
# second to a freshly started phonebookd; prints sipp's counts and the
# daemon's CPU time per REGISTER. Loopback only.
# Usage: [SETTLE=S] scripts/bench-register.sh [RATE] [N]   (after make build)
set -eu
rate=${1:-1000}
n=${2:-10000}
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${PHONEBOOKD:-$top/bin/phonebookd}
work=$(mktemp -d)
trap 'kill "$daemon" "$broker" 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/etc/config"
cp "$top/files/etc/config/phonebook" "$work/etc/config/"
u="$bin uci -c $work/etc/config -t $work/tmp/.uci"
$u set phonebook.main.state_dir="$work/state"
$u set phonebook.main.run_dir="$work/run"
$u set phonebook.main.www_dir="$work/www"
$u set phonebook.main.apps_dir="$work/apps"
$u set phonebook.sip.listen=127.0.0.1:25060
$u set phonebook.sip.max_bindings=$((n + 10))
# the REGISTER path alone: the monitor would otherwise probe every phone
$u set phonebook.monitor.probe_phones="${PROBE_PHONES:-0}"
$u commit phonebook
"$top/bin/ubus-broker" -s "$work/ubus.sock" 2>/dev/null &
broker=$!
sleep 0.3
"$bin" -c "$work/etc/config" -t "$work/tmp/.uci" -s "$work/ubus.sock" 2>"$work/daemon.log" &
daemon=$!
sleep 1

{
	echo SEQUENTIAL
	i=0
	while [ $i -lt "$n" ]; do echo $((100000 + i)); i=$((i + 1)); done
} > "$work/users.csv"

ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
sipp -sf "$top/tests/testdata/register.xml" -inf "$work/users.csv" -m "$n" -r "$rate" -l 2000 \
	-i 127.0.0.1 -nostdin -timeout 120s -trace_stat -stf "$work/stat.csv" 127.0.0.1:25060 > "$work/sipp.out" 2>&1 || true
t1=$(ticks)
grep -E "Successful call|Failed call|Retransmissions|Elapsed" "$work/sipp.out" | tail -4 || true
registered=$("$bin" call -s "$work/ubus.sock" phonebook status | grep -o '"registered_users": [0-9]*')
echo "daemon: $registered"
# SETTLE=S: read the memory S seconds after the load, once the daemon's
# scavenger has run (it pages out start-up code after its first period).
sleep "${SETTLE:-0}"
[ -n "${SHOW_MEMORY:-}" ] && "$bin" call -s "$work/ubus.sock" phonebook.health status | sed -n '/"memory"/,/}/p'
echo "daemon RSS: $(awk '/VmRSS/ {print $2, $3}' "/proc/$daemon/status") (anonymous $(awk '/RssAnon/ {print $2, $3}' "/proc/$daemon/status"), file-backed code $(awk '/RssFile/ {print $2, $3}' "/proc/$daemon/status"), peak $(awk '/VmHWM/ {print $2, $3}' "/proc/$daemon/status"))"
echo "daemon CPU: $(( (t1 - t0) * 1000000 / hz / n )) us per REGISTER ($(( t1 - t0 )) ticks at $hz Hz)"
