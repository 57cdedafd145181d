#!/usr/bin/env bash
# The report's timeline page in a real browser: headless Chromium (Debian's `chromium`
# package) loads the page of a known scenario (a mid-stream 429 after 3 chunks, continued
# on the key's fallback), runs its script, and we check the DOM it ends with: no script
# error, the page's own `data-ok="yes"`, the lanes and markers a reader needs; plus no
# console message and no external resource. A screenshot is taken too
# (REPORT_SCREENSHOT=docs/timeline.png keeps it, to refresh the README's picture).
#
# Without chromium it skips, saying why, unless CI is set: in CI it must run.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium_bin="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$chromium_bin" ]; then
    if [ -n "${CI:-}" ]; then
        echo "error: chromium is not installed (apt-get install -y chromium), and CI is set" >&2
        exit 1
    fi
    echo "SKIP report-browser: no chromium on this machine (apt-get install -y chromium); CI=1 makes this an error"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
scenario=scenarios/known_bug/midstream_429_key_fallbacks.yaml
page="$work/html/known_bug__midstream_429_key_fallbacks.html"

cargo run --locked -q -p switchback-sim --bin switchback -- report "$scenario" --html "$work/html" >"$work/table.txt"

browser() {
    "$chromium_bin" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d -p "$work")" --enable-logging=stderr --v=0 "$@"
}
# --virtual-time-budget lets the load event (and the page's script) run before the dump.
browser --virtual-time-budget=5000 --dump-dom "file://$page" >"$work/dom.html" 2>"$work/dom.log"
browser --hide-scrollbars --window-size=1260,680 --screenshot="$work/timeline.png" \
    "file://$page" >/dev/null 2>"$work/shot.log"
browser --virtual-time-budget=5000 --dump-dom "file://$work/html/index.html" \
    >"$work/index.html" 2>>"$work/dom.log"

failed=0
fail() {
    echo "FAIL: $*" >&2
    failed=1
}
need() { # need <file> <fixed string> <what>
    grep -qF -- "$2" "$1" || fail "$3 (no \`$2\` in $(basename "$1"))"
}

need "$work/dom.html" 'data-ok="yes"' "the page's script did not finish cleanly"
need "$work/dom.html" 'data-errors=""' "script errors on the page"
need "$work/dom.html" 'data-lanes="8"' "4 lanes in each of the 2 modes"
for mode in non_stream stream; do
    need "$work/dom.html" "<section class=\"mode\" data-mode=\"$mode\">" "the $mode section"
done
for lane in client gateway vertex flash; do
    need "$work/dom.html" "<g class=\"lane\" data-lane=\"$lane\">" "lane $lane"
done
need "$work/dom.html" 'class="marker fault" data-lane="vertex"' "the fault on the failing provider's lane"
need "$work/dom.html" 'error_event k=3 429' "the fault's kind, k and status"
need "$work/dom.html" 'class="marker commit" data-lane="gateway"' "the commit on the gateway lane"
need "$work/dom.html" 'class="marker fallback" data-lane="gateway"' "the fallback on the gateway lane"
need "$work/dom.html" 'class="tick chunk" data-lane="client"' "the client's chunks"
need "$work/dom.html" 'class="arrow request upstream" data-lane="gateway"' "requests to the providers"
need "$work/dom.html" 'data-to-lane="flash"' "the continuation sent to the fallback's provider"
need "$work/index.html" 'id="summary" data-scenarios="1" data-passed="1"' "the index's results table"
need "$work/index.html" 'href="known_bug__midstream_429_key_fallbacks.html"' "the index's link to the page"

# A console message or an uncaught exception, in the browser's own log.
if grep -E 'CONSOLE|Uncaught' "$work/dom.log"; then
    fail "the page wrote to the console"
fi
# Self-contained: nothing fetched from anywhere.
if grep -Eo '(src|href)="[a-z]+:[^"]*"' "$page" | grep -v '^href="known_bug'; then
    fail "the page names an external resource"
fi
if [ ! -s "$work/timeline.png" ] || [ "$(head -c 4 "$work/timeline.png" | tail -c 3)" != "PNG" ]; then
    fail "no screenshot"
fi

if [ "$failed" != 0 ]; then
    echo "--- dom.log" >&2
    tail -20 "$work/dom.log" >&2
    exit 1
fi
if [ -n "${REPORT_SCREENSHOT:-}" ]; then
    cp "$work/timeline.png" "$REPORT_SCREENSHOT"
    echo "screenshot: $REPORT_SCREENSHOT"
fi
echo "report-browser: the timeline page loads in Chromium with its lanes and markers, no errors"
