#!/bin/sh
# The first of README's two commands: installs the Debian packages the
# tests drive (make, sipp, baresip, shellcheck, qemu-user-static, file, setpriv and
# prlimit; dbus-daemon, dbus-send and busctl for the D-Bus tests;
# systemd-analyze; prometheus and promtool; chromium for the app page's
# browser test), as root or through sudo;
# without either it prints the one command to run and stops. Then: make test.
set -eu
pkgs="make sip-tester baresip-core shellcheck qemu-user-static file util-linux dbus-daemon dbus-bin systemd prometheus chromium"

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "setup: Go 1.26 is needed first (go.dev/doc/install); then run this again." >&2
	exit 1
fi
if [ "$(id -u)" = 0 ]; then
	run=""
elif command -v sudo >/dev/null 2>&1; then
	run="sudo"
else
	echo "setup: not root and no sudo; as root, run:" >&2
	echo "  apt-get update && apt-get install -y $pkgs" >&2
	exit 1
fi
$run apt-get update -qq
# shellcheck disable=SC2086 # $run is empty or sudo, $pkgs a word list
DEBIAN_FRONTEND=noninteractive $run apt-get install -y -qq $pkgs >/dev/null
echo "setup: installed $pkgs; next: make test"
