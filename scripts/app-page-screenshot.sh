#!/bin/sh
# Takes the app page's screenshots in docs/ with headless Chromium (Debian
# package chromium): after a simulated day on a fake clock, at 1280 and
# 360 px, light and dark (docs/app-page-1280.png, app-page-1280-dark.png,
# app-page-360.png, app-page-360-dark.png). They come from the page
# package's browser test, which fails when the page overflows the screen
# or draws text under 11 px; make test runs it without writing docs/.
set -eu
cd "$(dirname "$0")/.."
PAGE_SCREENSHOTS="$PWD/docs" go test -count=1 -run TestPageInABrowser ./page
ls -l docs/app-page-1280.png docs/app-page-1280-dark.png docs/app-page-360.png docs/app-page-360-dark.png
