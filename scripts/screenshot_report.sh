#!/usr/bin/env bash
# Render a demo report in headless Chromium and save a full-page screenshot, to check it the way a
# reader sees it (broken pictures, unreadable tables).
#   scripts/screenshot_report.sh [REPORT_HTML] [OUT_PNG] [HEIGHT]
# Needs Debian's `chromium` package (apt-get install -y chromium).
set -euo pipefail
report="${1:-runs/demo/report.html}"
shot="${2:-${report%.html}.png}"
height="${3:-6000}"
browser="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$browser" ]]; then
    echo "screenshot_report: chromium not found (apt-get install -y chromium)" >&2
    exit 2
fi
if [[ ! -f "$report" ]]; then
    echo "screenshot_report: no report at $report (run 'samadapt demo' first)" >&2
    exit 2
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$(realpath -m "$shot")" --window-size=1200,"$height" "file://$(realpath "$report")" >/dev/null 2>&1
echo "$shot"
