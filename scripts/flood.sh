#!/bin/sh
# UDP flood: OPTIONS as fast as 4 senders on 127.0.0.0/8 can send them,
# for 90 s, against a phonebookd started here (SIP and ubus on free
# ports/sockets of its own; loopback only). Then it reports worker
# restarts (must be 0), whether the process is still alive, whether
# "overload" was shown in phonebook.health check, the datagrams shed, and
# peak RSS. Exits 1 if a worker restarted, the daemon exited, or overload
# never showed.
# Usage: scripts/flood.sh [DURATION] [SENDERS]   (defaults 90s 4)
# PHONEBOOKD= runs another binary (the router build: make ipk's).
set -eu
duration=${1:-90s}
senders=${2:-4}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
daemon='' broker=''
trap 'kill $daemon $broker 2>/dev/null; rm -rf "$work"' EXIT

cd "$top"
bin=${PHONEBOOKD:-$work/phonebookd}
[ -n "${PHONEBOOKD:-}" ] || go build -o "$bin" ./cmd/phonebookd
go build -o "$work/ubus-broker" ./cmd/ubus-broker
go build -o "$work/sipflood" ./cmd/sipflood

mkdir -p "$work/etc/config"
cp "$top/files/etc/config/phonebook" "$work/etc/config/"
u="$bin uci -c $work/etc/config -t $work/tmp/.uci"
$u set phonebook.main.state_dir="$work/state"
$u set phonebook.main.run_dir="$work/run"
$u set phonebook.main.www_dir="$work/www"
$u set phonebook.main.apps_dir="$work/apps"
$u set phonebook.main.dbus=0
$u set phonebook.sip.listen=127.0.0.1:0
$u set phonebook.health.health_check_interval=1
$u commit phonebook
"$work/ubus-broker" -s "$work/ubus.sock" 2>/dev/null &
broker=$!
"$bin" -c "$work/etc/config" -t "$work/tmp/.uci" -s "$work/ubus.sock" 2>"$work/daemon.log" &
daemon=$!
call() { "$bin" call -s "$work/ubus.sock" "$@"; }
i=0
until call phonebook status > "$work/status.json" 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$daemon" 2>/dev/null; then
		echo "the daemon did not start:" >&2
		cat "$work/daemon.log" >&2
		exit 1
	fi
	sleep 0.1
done
target=$(grep -o '"listen": "[^"]*"' "$work/status.json" | head -1 | cut -d'"' -f4)
echo "phonebookd (pid $daemon) listening on $target; flooding for $duration from $senders senders"

"$work/sipflood" -target "$target" -senders "$senders" -duration "$duration" > "$work/flood.out" 2>&1 &
flood=$!
overload=0 samples=0
while kill -0 "$flood" 2>/dev/null; do
	if call phonebook.health check > "$work/check.json" 2>/dev/null; then
		samples=$((samples + 1))
		grep -q '"code": "overload"' "$work/check.json" && overload=$((overload + 1))
	fi
	sleep 1
done
wait "$flood" || { cat "$work/flood.out" >&2; exit 1; }
cat "$work/flood.out"
sleep 2

status=0
if kill -0 "$daemon" 2>/dev/null; then
	alive=yes
else
	alive=no status=1
fi
restarts=0
if call phonebook.threads list > "$work/threads.json" 2>/dev/null; then
	restarts=$(grep -o '"restart_count": [0-9]*' "$work/threads.json" | awk '{n += $2} END {print n + 0}')
fi
shed=$(call phonebook status 2>/dev/null | grep -o '"receive_queue": [0-9]*' | grep -o '[0-9]*$' || echo unknown)
peak=$(awk '/VmHWM/ {print $2, $3}' "/proc/$daemon/status" 2>/dev/null || echo unknown)
[ "$restarts" -eq 0 ] || status=1
[ "$overload" -gt 0 ] || status=1
echo "worker restarts: $restarts (must be 0)"
echo "process alive: $alive"
echo "overload shown in phonebook.health check: $overload of $samples samples"
echo "datagrams shed at the full receive queue (sip.shed.receive_queue): $shed"
echo "peak RSS: $peak"
[ $status -eq 0 ] || { echo "FAILED" >&2; tail -20 "$work/daemon.log" >&2; }
exit $status
