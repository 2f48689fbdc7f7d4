#!/usr/bin/env bash
# Opens a run's report.html in headless Chromium (Debian's `chromium` package): takes a screenshot
# and fails if the page logged a JavaScript error or its trace browser did not render.
#   scripts/check_report.sh RUN_DIR [SCREENSHOT.png]
set -euo pipefail
RUN="${1:?usage: scripts/check_report.sh RUN_DIR [SCREENSHOT.png]}"
SHOT="${2:-$RUN/report.png}"
REPORT="$(cd "$RUN" && pwd)/report.html"
[ -f "$REPORT" ] || { echo "no report at $REPORT (run: aha report $RUN)" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium is not installed (apt-get install chromium)" >&2; exit 1; }
FLAGS=(--headless --no-sandbox --disable-gpu --hide-scrollbars --enable-logging=stderr --v=0)
LOG=$(mktemp)
DOM=$(chromium "${FLAGS[@]}" --virtual-time-budget=3000 --dump-dom "file://$REPORT" 2>"$LOG")
chromium "${FLAGS[@]}" --window-size=1400,1700 --screenshot="$SHOT" "file://$REPORT" 2>>"$LOG" >/dev/null
if grep -E "Uncaught|CONSOLE.*(Error|error)" "$LOG"; then
  echo "the report logged errors (above)" >&2; exit 1
fi
COUNT=$(grep -o '<span id="count">[^<]*</span>' <<<"$DOM" || true)
CHARTS=$(grep -o '<svg' <<<"$DOM" | wc -l)
echo "charts: $CHARTS; trace browser: ${COUNT:-not rendered}; screenshot: $SHOT"
[ -n "$COUNT" ] && [ "$CHARTS" -gt 0 ]
