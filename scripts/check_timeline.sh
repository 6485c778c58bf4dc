#!/usr/bin/env bash
# Checks a `shoal run --timeline` page in headless Chromium: the page must
# log nothing to the console (it has no scripts, so any message is an error),
# and the rendered DOM must hold one `<rect class="test">` bar per attempt,
# as many as the svg's `data-attempts`. With PNG, also saves a screenshot.
# A manual check, not part of CI: it needs `chromium` on PATH
# (Debian: apt-get install chromium).
#   usage: scripts/check_timeline.sh TIMELINE.html [SCREENSHOT.png]
set -euo pipefail
html=$(realpath "$1")
png=${2:-}
chrome=(chromium --headless --disable-gpu --no-sandbox --hide-scrollbars)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

dom=$("${chrome[@]}" --enable-logging=stderr --v=0 --dump-dom "file://$html" 2>"$log")
errors=$(grep -c ':CONSOLE' "$log" || true)
bars=$(grep -o '<rect class="test"' <<<"$dom" | wc -l || true)
attempts=$(grep -o 'data-attempts="[0-9]*"' <<<"$dom" | grep -o '[0-9]\+' || echo missing)
echo "console messages: $errors, bars: $bars, data-attempts: $attempts"
grep ':CONSOLE' "$log" >&2 || true
[[ $errors == 0 && $bars == "$attempts" ]] || { echo "timeline check FAILED" >&2; exit 1; }

if [[ -n $png ]]; then
    # The svg plus the heading and the note above it; the svg is 1280 wide.
    svg_height=$(grep -o '<svg[^>]* height="[0-9]*"' <<<"$dom" | grep -o '[0-9]*"$' | tr -d '"')
    "${chrome[@]}" --window-size=1320,$((svg_height + 110)) --screenshot="$(realpath -m "$png")" \
        "file://$html" 2>/dev/null
    echo "screenshot: $png"
fi
echo "timeline check passed"
