#!/usr/bin/env bash
# Renders RUN/report.html (charter report RUN) to RUN/report.png with headless Chromium, to look at
# the page as a reader would. Needs Debian's chromium: apt-get install -y chromium
#   scripts/report-screenshot.sh RUN [WIDTH] [HEIGHT]
set -euo pipefail
run=${1:?usage: scripts/report-screenshot.sh RUN [WIDTH] [HEIGHT]}
width=${2:-1280}
height=${3:-4000}
page="$(cd "$run" && pwd)/report.html"
[ -f "$page" ] || { echo "report-screenshot: $page does not exist; run charter report $run first" >&2; exit 1; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "report-screenshot: no chromium; apt-get install -y chromium" >&2; exit 1; }
# --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$width,$height" \
  --screenshot="$(dirname "$page")/report.png" "file://$page" 2>/dev/null
echo "report-screenshot: $(dirname "$page")/report.png"
