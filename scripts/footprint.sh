#!/bin/sh
# The router build's memory footprint (issue 19): builds phonebookd as the
# package does (CGO_ENABLED=0, -trimpath, -ldflags '-s -w', tags nodbus),
# runs it with the development ubus broker in a private network namespace
# (unshare -n, loopback only; SIP on 127.0.0.1:5060 there), and samples
# the daemon at:
#   idle 5 s after start, idle IDLE_SECONDS after start (default 600),
#   256 phones registered (sipp, 500/s), 1 s and 30 s after,
#   20,000 REGISTERs of new users at 5,000/s (sipp): at the end, 10 s and
#   60 s after,
#   100,000 OPTIONS from 1,000 sources in 127.0.0.0/8 (scripts/optflood,
#   10,000/s): at the end and 60 s after.
# It prints four markdown tables, a row per point (MB unless named), then
# notes and the check of the issue's "back within base + 1 MB" (base: the
# 256-phones row).
#
# The first table is /proc alone, read at the sample time: the kernel's
# counters (status, smaps_rollup) and the resident memory split by mapping
# (/proc/PID/smaps): the executable's code and read-only data (file pages),
# its data and bss, the Go heap arenas (heap spans: objects, free pages,
# goroutine stacks), the runtime's other anonymous mappings (GC metadata,
# span structures, the arena index, page allocator summaries), and what is
# left ([stack], [vdso]). Arenas sit at the runtime's hint addresses, the
# rest of its mappings comes from mmap(NULL) in the kernel's mmap area next
# to the vDSO: an anonymous mapping more than 64 GB below the vDSO is
# counted as arena (64-bit address spaces; on 32-bit all goes to "runtime
# other").
# The second table splits the executable's resident pages by ELF section
# (scripts/coderes, from /proc/PID/pagemap): the code (.text), read-only
# data (.rodata) and the tables the runtime reads to unwind stacks
# (.gopclntab), with how many of each one's 64 KB blocks are touched: a
# fault maps the whole 64 KB block around it (the kernel's fault-around),
# so a section whose blocks are all touched is all resident however
# little of it runs.
# The third table splits the private memory by part of the Go runtime
# (scripts/runtimemem, KB): it reads the running stripped build with the
# symbols of its twin (the same build without -s -w, SYMBOLS=1
# scripts/router-build.sh) and gives every resident page of the
# anonymous mappings to a part: heap spans (objects), stacks and GC work
# buffers, free heap pages, the size classes' span sets (blocks and
# spines), the mark bits, the other runtime structures, bss.
# The fourth table is the runtime's own view (runtime/metrics), from the
# health snapshot's memory section (phonebook.health status). The daemon
# reads those figures at each evaluation only: every
# health_check_interval (60 s as shipped) and on events (a condition
# raised or cleared, at most once a second); no ubus method reads them
# when called. So the table gives the snapshot's age (from the
# evaluation's timestamp, phonebook_health_evaluation_timestamp_seconds of
# phonebook.health metrics) beside its figures. The snapshot has no heap
# released, heap free or GC metadata figure: the smaps split stands for
# them ("runtime other" is the metadata and the runtime's structures).
#
# Usage: scripts/footprint.sh [IDLE_SECONDS]   (as root: unshare -n; sipp)
# Settings: as shipped (files/etc/config/phonebook: sip.max_bindings 256,
# health.health_check_interval 60), except monitor.probe_phones 0 (the
# REGISTER path alone, as scripts/bench-register.sh). With the shipped
# bound the 20,000 new users are refused with 503 past the 256th binding
# (sipp counts them failed; the notes give the daemon's shed counter).
# MAX_BINDINGS=20480 runs the second scenario: every one of the 20,000 is
# a new phone that gets a binding (the issue's first figures).
# GOMEMLIMIT in the environment reaches the daemon (runtimetune then keeps
# it instead of the limit it derives from MemTotal).
#
# The Go floor: scripts/floorprog, the smallest Go daemon of the same
# shape with the project's runtime tuning (UDP and TCP listeners, signals,
# slog, runtime/metrics, runtimetune with the daemon's own settings),
# built with the same flags, is started at the same time in the same
# namespace and sampled at the two idle points, then stopped before the
# loads. Its rows ("Go floor ...") are what the Go runtime and std hold
# on their own under the same conditions; the notes give what the project
# adds over them.
#
# READ_AHEAD_KB=N: both executables run from an ext4 file system on a
# loop device (an image in the work directory) whose queue/read_ahead_kb
# is N, set before they are copied there. Why: after the scavenger pages
# the code out, each fault reads the executable back from the disk, and
# this kernel (6.18) reads ahead read_ahead_kb around every fault in an
# executable mapping whatever MADV_RANDOM says (the VM's disk has 8192);
# routers' kernels (5.15, 6.6) honour MADV_RANDOM, and a package on jffs2
# is read a page at a time. READ_AHEAD_KB=0 is the nearer to a router.
# Unset: the executables run from the work directory, as before.
set -eu
idle=${1:-600}
top=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "${FOOTPRINT_WORK:-}" ]; then
	case $idle in '' | *[!0-9]*)
		echo "usage: scripts/footprint.sh [IDLE_SECONDS]" >&2
		exit 2
		;;
	esac
	case ${MAX_BINDINGS:-} in *[!0-9]*)
		echo "footprint: MAX_BINDINGS must be a number" >&2
		exit 2
		;;
	esac
	case ${READ_AHEAD_KB-unset} in unset) ;; '' | *[!0-9]*)
		echo "footprint: READ_AHEAD_KB must be a number (KB)" >&2
		exit 2
		;;
	*)
		if ! command -v mkfs.ext4 >/dev/null || ! command -v losetup >/dev/null; then
			echo "footprint: READ_AHEAD_KB needs mkfs.ext4 (e2fsprogs) and losetup (util-linux)" >&2
			exit 1
		fi
		;;
	esac
	command -v sipp >/dev/null || {
		echo "footprint: sipp is not installed" >&2
		exit 1
	}
	# a fresh directory per run: the daemon's executable is a file no
	# other process maps (MADV_PAGEOUT skips pages mapped twice)
	work=$(mktemp -d /tmp/footprint.XXXXXX)
	loop=
	mnt=
	# unmounted and detached on any exit, Ctrl-C included (a process
	# still closing its executable: the unmount is tried again)
	# shellcheck disable=SC2317 # called by the trap
	cleanup() {
		if [ -n "$mnt" ]; then
			for _ in 1 2 3 4 5 6 7 8 9 10; do
				umount "$mnt" 2>/dev/null && break
				sleep 0.5
			done
		fi
		if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
		rm -rf "$work"
	}
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	cd "$top"
	# the router build, as Makefile's cross target makes it (amd64 here),
	# and the Go floor with the same flags
	sh scripts/router-build.sh "$work/phonebookd"
	sh scripts/router-build.sh "$work/floorprog" nodbus ./scripts/floorprog
	# their twins with symbols, for scripts/runtimemem (never run)
	SYMBOLS=1 sh scripts/router-build.sh "$work/phonebookd.sym"
	SYMBOLS=1 sh scripts/router-build.sh "$work/floorprog.sym" nodbus ./scripts/floorprog
	# the CLI (uci, call) from a copy: never the daemon's own file
	cp "$work/phonebookd" "$work/phonebookd-cli"
	# the work directory's disk and its read-ahead (a partition's is its
	# disk's)
	dev=$(df --output=source "$work" | tail -1)
	ra=unknown
	for q in "/sys/class/block/${dev#/dev/}/queue" "/sys/class/block/${dev#/dev/}/../queue"; do
		if [ -r "$q/read_ahead_kb" ]; then
			ra=$(cat "$q/read_ahead_kb")
			break
		fi
	done
	where="the work directory ($dev, read_ahead_kb $ra)"
	if [ -n "${READ_AHEAD_KB+set}" ]; then
		truncate -s 64M "$work/ra.img"
		mkfs.ext4 -q -F "$work/ra.img"
		loop=$(losetup -f --show "$work/ra.img")
		mnt=$work/ra
		mkdir "$mnt"
		mount "$loop" "$mnt" || {
			mnt=
			exit 1
		}
		echo "$READ_AHEAD_KB" >"/sys/block/$(basename "$loop")/queue/read_ahead_kb"
		mkdir "$mnt/bin"
		mv "$work/phonebookd" "$work/floorprog" "$mnt/bin/"
		where="ext4 on $loop, read_ahead_kb $(cat "/sys/block/$(basename "$loop")/queue/read_ahead_kb")"
	fi
	# written back, as a package's binary on flash is: the page cache's
	# pages of a file just written are dirty, and smaps would count the
	# daemon's code as Private_Dirty
	sync
	go build -o "$work/ubus-broker" ./cmd/ubus-broker
	go build -o "$work/optflood" ./scripts/optflood
	go build -o "$work/coderes" ./scripts/coderes
	go build -o "$work/runtimemem" ./scripts/runtimemem
	bindir=${mnt:+$mnt/bin}
	bindir=${bindir:-$work}
	echo "router build: $(stat -c %s "$bindir/phonebookd") bytes (amd64, nodbus, stripped); Go floor (scripts/floorprog, same flags): $(stat -c %s "$bindir/floorprog") bytes; both run from $where; $(go version); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >&2
	# the same script again, in a network namespace of its own
	FOOTPRINT_WORK=$work FOOTPRINT_BIN=$bindir unshare -n sh "$0" "$idle"
	exit
fi

work=$FOOTPRINT_WORK
bin=$FOOTPRINT_BIN/phonebookd
floor=$FOOTPRINT_BIN/floorprog
cli=$work/phonebookd-cli
sock=$work/ubus.sock
ip link set lo up
broker=
daemon=
floorpid=
trap 'kill $daemon $floorpid $broker 2>/dev/null || true; wait' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work/etc/config"
cp "$top/files/etc/config/phonebook" "$work/etc/config/"
u="$cli uci -c $work/etc/config -t $work/tmp/.uci"
$u set phonebook.main.state_dir="$work/state"
$u set phonebook.main.run_dir="$work/run"
$u set phonebook.main.www_dir="$work/www"
$u set phonebook.main.apps_dir="$work/apps"
$u set phonebook.sip.listen=127.0.0.1:5060
[ -z "${MAX_BINDINGS:-}" ] || $u set phonebook.sip.max_bindings="$MAX_BINDINGS"
$u set phonebook.monitor.probe_phones=0
$u commit phonebook
maxb=$($u get phonebook.sip.max_bindings)
interval=$($u get phonebook.health.health_check_interval)

"$work/ubus-broker" -s "$sock" 2>"$work/broker.log" &
broker=$!
i=0
while [ ! -S "$sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
# the floor and the daemon at the same time, with the same settings
"$floor" -c "$work/etc/config" -t "$work/tmp/.uci" -every "${interval}s" 2>"$work/floor.log" &
floorpid=$!
"$bin" -c "$work/etc/config" -t "$work/tmp/.uci" -s "$sock" 2>"$work/daemon.log" &
daemon=$!
t0=$(date +%s)
i=0
until "$cli" call -s "$sock" phonebook.health check >/dev/null 2>&1; do
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

# kB of KEY in a /proc file of process PID: kb PID KEY FILE
kb() { awk -v k="$2:" '$1 == k {print $2; exit}' "/proc/$1/$3"; }

# the resident kB of process PID with executable EXE by mapping: code
# data arena other rest (see the head of this file): bymapping PID EXE
bymapping() {
	awk -v exe="$2" '
	function hex(s,   i, v) {
		v = 0
		for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
		return v
	}
	/^[0-9a-f]+-[0-9a-f]+ / {
		n++
		split($1, r, "-")
		start[n] = hex(r[1]); perm[n] = $2; path[n] = $6
		if ($6 == "[vdso]") vdso = start[n]
		if ($6 == "[stack]" && top == 0) top = start[n]
		next
	}
	$1 == "Rss:" { rss[n] = $2 }
	END {
		if (vdso == 0) vdso = top
		for (i = 1; i <= n; i++) {
			if (path[i] == exe) {
				if (perm[i] ~ /^rw/) data += rss[i]; else code += rss[i]
			} else if (path[i] == "" && i > 1 && path[i - 1] == exe && perm[i - 1] ~ /^rw/) {
				data += rss[i] # bss, noptrbss
			} else if (path[i] == "" && vdso > 0 && start[i] < vdso - 68719476736) {
				arena += rss[i]
			} else if (path[i] == "") {
				other += rss[i]
			} else {
				rest += rss[i]
			}
		}
		printf "%d %d %d %d %d\n", code, data, arena, other, rest
	}' "/proc/$1/smaps"
}

# a field of the health snapshot's memory section ("null" where unmeasured)
health() {
	sed -n '/"memory": {/,/}/p' "$work/health.json" |
		awk -v k="\"$1\":" -v f="$2" '$1 == k {v = $2; sub(/,$/, "", v); if (v == "null") print v; else printf f, v; exit}'
}

# a counter of the sip section of phonebook status (shed counts included)
sipfig() {
	"$cli" call -s "$sock" phonebook status | grep -o "\"$1\": [0-9]*" | head -1 | awk '{print $2}'
}

# the Unix second of the health snapshot's evaluation
evaluated() {
	"$cli" call -s "$sock" phonebook.health metrics |
		awk '{n = split($0, l, /\\n/); for (i = 1; i <= n; i++) if (split(l[i], f, " ") == 2 && f[1] == "phonebook_health_evaluation_timestamp_seconds") {printf "%d\n", f[2]; exit}}'
}

mb() { awk -v v="$1" 'BEGIN {printf "%.2f", v / 1024}'; }

proct=$work/proc.md
cat >"$proct" <<'HEAD'
| point | t (s) | VmRSS | RssAnon | RssFile | Pss | Private_Dirty | VmHWM | threads | exe code | exe data+bss | Go arenas | runtime other | rest |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
HEAD
codet=$work/code.md
cat >"$codet" <<'HEAD'
| point | .text | .rodata | .gopclntab |
|---|---|---|---|
HEAD
memt=$work/runtimemem.md
cat >"$memt" <<'HEAD'
| point | heap spans | stacks, GC work buffers | heap free | span sets: blocks | span sets: spines | mark bits | persistentalloc other | arena index | page allocator | exe bss | rest | total |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
HEAD
rtt=$work/runtime.md
cat >"$rtt" <<'HEAD'
| point | snapshot age (s) | heap live | heap objects | stacks (KB) | Go total | goroutines |
|---|---|---|---|---|---|---|
HEAD

# the /proc row and the section row of process PID with executable EXE,
# its VmRSS, RssAnon and RssFile (kB) recorded in $work/kb under NAME:
# procrow NAME PID EXE
procrow() {
	ts=$(date +%s)
	rss=$(kb "$2" VmRSS status)
	anon=$(kb "$2" RssAnon status)
	file=$(kb "$2" RssFile status)
	row=$(printf '| %s | %d | %s | %s | %s | %s | %s | %s | %s |' "$1" $((ts - t0)) \
		"$(mb "$rss")" "$(mb "$anon")" "$(mb "$file")" \
		"$(mb "$(kb "$2" Pss smaps_rollup)")" "$(mb "$(kb "$2" Private_Dirty smaps_rollup)")" "$(mb "$(kb "$2" VmHWM status)")" \
		"$(kb "$2" Threads status)")
	echo "$rss $anon $file $1" >>"$work/kb"
	# shellcheck disable=SC2046 # five numbers, split on purpose
	set -- "$1" "$2" "$3" $(bymapping "$2" "$3")
	printf '%s %s | %s | %s | %s | %s |\n' "$row" "$(mb "$4")" "$(mb "$5")" "$(mb "$6")" "$(mb "$7")" "$(mb "$8")" >>"$proct"
	tail -1 "$proct" >&2
	# the executable's resident pages by section (scripts/coderes):
	# "MB resident, 64 KB blocks touched/in all". coderes failing, or a
	# section missing from its line, ends the run (set -e): an empty
	# cell would read as nothing resident.
	code=$("$work/coderes" "$2" "$3")
	echo "$code" | tr ';' '\n' | awk -v p="$1" '
		{ sub(/^ /, ""); cell[$1] = sprintf("%.2f, %s", $3 / 1024, $4) }
		END {
			n = split(".text .rodata .gopclntab", want, " ")
			for (i = 1; i <= n; i++)
				if (!(want[i] in cell)) {
					printf "coderes: no %s in its line\n", want[i] >"/dev/stderr"
					exit 1
				}
			printf "| %s | %s | %s | %s |\n", p, cell[".text"], cell[".rodata"], cell[".gopclntab"]
		}' >>"$codet"
	# the private memory by part of the runtime (scripts/runtimemem, KB,
	# with the executable's twin with symbols); failing, or a part or
	# the total missing, ends the run as above
	# A walk can fail on a runtime caught mid-change under load (a span
	# in an arena added after the arena list was read): that row says so
	# and the run goes on, rather than losing the run's other samples.
	if ! parts=$("$work/runtimemem" "$2" "$work/$(basename "$3").sym" 2>"$work/runtimemem.err"); then
		printf '| %s | runtimemem failed: %s |\n' "$1" "$(head -1 "$work/runtimemem.err")" >>"$memt"
		return
	fi
	echo "$parts" | awk -v p="$1" '
		{ kb[$1] = $2 }
		END {
			n = split("heap-spans manual-spans heap-free spanset-blocks spanset-spines gc-markbits persistentalloc-other arena-index pagealloc exe-bss total", want, " ")
			for (i = 1; i <= n; i++)
				if (!(want[i] in kb)) {
					printf "runtimemem: no %s in its output\n", want[i] >"/dev/stderr"
					exit 1
				}
			# the rest: [stack], GC span queues, profile buckets,
			# getrandom states, unattributed
			rest = kb["total"]
			row = ""
			for (i = 1; i < n; i++) {
				rest -= kb[want[i]]
				row = row sprintf(" %d |", kb[want[i]])
			}
			printf "| %s |%s %d | %d |\n", p, row, rest, kb["total"]
		}' >>"$memt"
}

# one row of each table for the daemon; the /proc figures first, read at
# once
sample() {
	procrow "$1" "$daemon" "$bin"
	echo "$1 $rss" >>"$work/rss"
	# the snapshot and its evaluation's time, read again if an
	# evaluation came between the two reads
	for _ in 1 2 3; do
		e0=$(evaluated)
		"$cli" call -s "$sock" phonebook.health status >"$work/health.json"
		[ "$(evaluated)" != "$e0" ] || break
	done
	# an evaluation after the /proc read is as fresh as it: age 0
	age=$((ts - e0))
	[ "$age" -ge 0 ] || age=0
	printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$age" \
		"$(health heap_mb %.2f)" "$(health heap_objects_mb %.2f)" "$(health stack_kb %d)" "$(health go_total_mb %.2f)" \
		"$(health goroutines %d)" >>"$rtt"
}

# NAME FIRST N RATE: sipp registers N users from FIRST at RATE per second
register() {
	{
		echo SEQUENTIAL
		seq "$2" $(($2 + $3 - 1))
	} >"$work/users.csv"
	shed0=$(sipfig registrations)
	sipp -sf "$top/tests/testdata/register.xml" -inf "$work/users.csv" -m "$3" -r "$4" -l 2000 \
		-i 127.0.0.1 -nostdin -timeout 120s 127.0.0.1:5060 >"$work/sipp-$1.out" 2>&1 || true
	echo "$1 ($3 REGISTERs at $4/s): sipp $(grep -E 'Successful call' "$work/sipp-$1.out" | tail -1 | awk '{print $(NF)}') successful, $(grep -E 'Failed call' "$work/sipp-$1.out" | tail -1 | awk '{print $(NF)}') failed; the daemon: $(sipfig registered_users) users registered (max_bindings $maxb), $(($(sipfig registrations) - shed0)) REGISTERs shed with 503 at the bound" >>"$work/notes"
}

: >"$work/notes"
: >"$work/rss"
: >"$work/kb"
fl="Go floor (scripts/floorprog)"
# over the floor at an idle point: overfloor SECONDS
overfloor() {
	awk -v d="idle, $1 s" -v f="$fl, idle, $1 s" -v n="$1" '
	{ name = $0; sub(/^[0-9]+ [0-9]+ [0-9]+ /, "", name); rss[name] = $1; anon[name] = $2; file[name] = $3 }
	END {
		if (!(d in rss) || !(f in rss)) exit 1
		printf "the project over the Go floor, idle at %s s: %+.2f MB VmRSS (%+.2f RssAnon, %+.2f RssFile)\n", n,
			(rss[d] - rss[f]) / 1024, (anon[d] - anon[f]) / 1024, (file[d] - file[f]) / 1024
	}' "$work/kb" >>"$work/notes"
}
until_t 5
sample "idle, 5 s"
procrow "$fl, idle, 5 s" "$floorpid" "$floor"
until_t "$idle"
sample "idle, $idle s"
procrow "$fl, idle, $idle s" "$floorpid" "$floor"
overfloor 5
overfloor "$idle"
# the floor's own view of its runtime, if a tick came (every
# health_check_interval)
echo "the Go floor's last runtime/metrics line (KB): $(grep 'msg=runtime heap_objects_kb=' "$work/floor.log" | tail -1 | sed 's/.*msg=runtime //' | grep . || echo "none (no tick of ${interval} s before it stopped)")" >>"$work/notes"
# stopped before the loads: they are the daemon's alone
kill "$floorpid"
wait "$floorpid" || true
floorpid=

register phones 1000 256 500
sleep 1
sample "256 phones registered"
# the same phones once the scavenger has had three periods (10 s as
# shipped): the row above is read 1 s after sipp and after this
# script's own ubus calls, whose garbage and free pages are not yet
# given back; the check below keeps the row above as its base
t1=$(date +%s)
until_t 30 "$t1"
sample "... 256 phones, 30 s after"

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

# the limit and GOGC in force as the snapshot gives them (the keys it has)
tuning=$(sed -n '/"memory": {/,/}/p' "$work/health.json" |
	awk '$1 ~ /^"(memory_limit_mb|memory_limit_source|gc_percent)":$/ {k = $1; v = $2; gsub(/[":]/, "", k); sub(/,$/, "", v); printf "%s%s %s", sep, k, v; sep = ", "}')
echo "the runtime's settings in the last snapshot: ${tuning:-none}" >>"$work/notes"
echo "settings: sip.max_bindings $maxb, health.health_check_interval $interval, monitor.probe_phones 0; the daemon's start-up line on the runtime: $(grep -m 1 -o 'msg=runtime .*' "$work/daemon.log" || echo none)" >>"$work/notes"
echo "/proc at the sample time (MB):"
echo
cat "$proct"
echo
echo "The executable's resident pages by section (MB resident, 64 KB fault-around blocks touched/in all; scripts/coderes):"
echo
cat "$codet"
echo
echo "The private memory by part of the runtime (KB resident; scripts/runtimemem: every resident page of the anonymous mappings, the parts add up to the total; RssAnon also counts the executable's data pages copied on write):"
echo
cat "$memt"
echo
echo "The runtime (runtime/metrics) in the health snapshot, evaluated the given seconds before the sample (MB unless named):"
echo
cat "$rtt"
echo
sed 's/^/- /' "$work/notes"
echo
awk '$0 ~ /^256 phones registered / {base = $NF} $0 ~ /^\.\.\. 60 s after / && !done {after = $NF; done = 1}
END {
	limit = base + 1024
	verdict = after <= limit ? "within" : sprintf("over by %.2f MB", (after - limit) / 1024)
	printf "check: 60 s after the 20,000 REGISTERs VmRSS %.2f MB, base (256 phones) %.2f MB + 1 MB = %.2f MB: %s\n", after / 1024, base / 1024, limit / 1024, verdict
}' "$work/rss"
