#!/bin/sh
# Renders the app page after a simulated day (the page package's test, on
# a fake clock) and screenshots it with headless Chromium (Debian package
# chromium), light and dark: docs/app-page-history.png and
# docs/app-page-history-dark.png.
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PAGE_HTML="$tmp/page.html" go test -count=1 -run TestHistoryChartsAfterASimulatedDay ./page >/dev/null
shot() { # scheme output
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync \
		--user-data-dir="$tmp/profile-$1" --hide-scrollbars --force-color-profile=srgb \
		--blink-settings=preferredColorScheme="$2" \
		--window-size=1000,850 --screenshot="$3" "file://$tmp/page.html" 2>/dev/null
}
shot light 1 docs/app-page-history.png
shot dark 0 docs/app-page-history-dark.png
ls -l docs/app-page-history.png docs/app-page-history-dark.png
