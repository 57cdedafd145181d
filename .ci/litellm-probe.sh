#!/usr/bin/env bash
# The seed bug, reproduced on the real LiteLLM, and the same probes against Switchback.
#
# 1. A Python venv with litellm[proxy]==1.83.0 (the seed's line) from PyPI. No database.
# 2. For each scenario: `switchback fakes --emit-config litellm`, LiteLLM started on
#    127.0.0.1 with that config, `switchback probe`, and a check of the verdict (its exit
#    status) and of its reasons (lines of the report).
# 3. The same scenarios against Switchback's own `serve`: every one must be equivalent.
#
# Needs: Python 3 with venv and pip, and PyPI. SWITCHBACK_SKIP_LITELLM=1 skips the whole
# suite (quick local runs); SWITCHBACK_LITELLM_VENV reuses a venv elsewhere. The venv is
# kept in target/ and reused when it already holds the right version.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${SWITCHBACK_SKIP_LITELLM:-0}" == 1 ]]; then
    # CI never skips: a green run must mean the suite ran.
    if [[ -n "${CI:-}" ]]; then
        echo "SWITCHBACK_SKIP_LITELLM=1 is for local runs: CI (CI=${CI}) runs the suite" >&2
        exit 1
    fi
    echo "== LiteLLM probe suite skipped (SWITCHBACK_SKIP_LITELLM=1)"
    exit 0
fi

LITELLM_VERSION=1.83.0
PYTHON=${PYTHON:-python3}
VENV=${SWITCHBACK_LITELLM_VENV:-target/litellm-venv}
WORK=target/litellm-probe
BIN=target/release/switchback
MASTER=sk-switchback-master
suite_started=$(date +%s)
mkdir -p "$WORK"

echo "== LiteLLM $LITELLM_VERSION in $VENV"
# A venv is reused only when it was built by this script from the same constraints.
if cmp -s .ci/litellm-constraints.txt "$VENV/switchback-constraints.txt" \
    && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
    echo "   (reusing the venv)"
else
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # LiteLLM's own requirements are ranges; the constraints pin what the suite was checked
    # against, so a new release of a dependency cannot change what CI tests.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        -c .ci/litellm-constraints.txt "litellm[proxy]==$LITELLM_VERSION"
    cp .ci/litellm-constraints.txt "$VENV/switchback-constraints.txt"
fi
installed=$(date +%s)
echo "   ready in $((installed - suite_started)) s"

cargo build --release --locked -p switchback-sim --bin switchback
built=$(date +%s)

# Ports: 10 consecutive free ones on loopback for the fakes (port base), then the gateway's,
# then a second gateway's (differential probes run LiteLLM and Switchback side by side).
# Started at a per-process offset so parallel checkouts on one machine rarely meet, and
# searched below the kernel's ephemeral range: there the kernel never picks a source port for
# an outgoing connection, which could take a port between this choice and its use (a CI run
# failed so: a check found port 37592 "taken").
read -r PORT_BASE GATEWAY_PORT SECOND_PORT < <("$VENV/bin/python" - "$$" <<'EOF'
import socket, sys
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    ephemeral_low = 32768
low, high = 20000, max(ephemeral_low - 12, 20000 + 12 * 100)
span = (high - low) // 12
start = int(sys.argv[1]) % span
for step in range(span):
    base = low + ((start + step) % span) * 12
    held = []
    try:
        for port in range(base, base + 12):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            held.append(s)
        print(base, base + 10, base + 11)
        break
    except OSError:
        pass
    finally:
        for s in held:
            s.close()
else:
    sys.exit(f"no 12 free consecutive loopback ports between {low} and {high}")
EOF
)
GATEWAY="http://127.0.0.1:$GATEWAY_PORT"
SECOND="http://127.0.0.1:$SECOND_PORT"
echo "   fakes from 127.0.0.1:$PORT_BASE, gateway at $GATEWAY, a second one at $SECOND"

GATEWAY_PID=
SECOND_PID=
stop_gateway() {
    local pid
    for pid in "$GATEWAY_PID" "$SECOND_PID"; do
        if [[ -n "$pid" ]]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    GATEWAY_PID=
    SECOND_PID=
}
trap stop_gateway EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# wait_for URL LOG [PID]: until URL answers 2xx while the gateway (PID, default GATEWAY_PID)
# is still running, the gateway exits, or 180 s pass. Only a health answer counts, and only
# from a gateway still up once it came: a process already on the port (a stale one) would
# answer while the gateway just started fails to bind and exits.
wait_for() {
    local url=$1 log=$2 pid=${3:-$GATEWAY_PID}
    for _ in $(seq 1 360); do
        kill -0 "$pid" 2>/dev/null || { tail -40 "$log" >&2; fail "the gateway exited (log: $log)"; }
        if "$VENV/bin/python" - "$url" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
EOF
        then
            # A gateway that could not bind exits at once: give it that moment.
            sleep 0.5
            kill -0 "$pid" 2>/dev/null || { tail -40 "$log" >&2; fail "the gateway exited after $url answered: another process holds the port (log: $log)"; }
            return 0
        fi
        sleep 0.5
    done
    tail -40 "$log" >&2
    fail "$url did not answer within 180 s (log: $log)"
}

start_litellm() { # scenario name
    local config="$WORK/$2.litellm.yaml" log="$WORK/$2.litellm.log"
    "$BIN" fakes "$1" --port-base "$PORT_BASE" --emit-config litellm > "$config"
    # No remote price list: the machine has no network but the package registries.
    LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/litellm" --config "$config" \
        --host 127.0.0.1 --port "$GATEWAY_PORT" > "$log" 2>&1 &
    GATEWAY_PID=$!
    wait_for "$GATEWAY/health/liveliness" "$log"
}

start_switchback() { # scenario name
    local config="$WORK/$2.switchback.yaml" log="$WORK/$2.switchback.log"
    "$BIN" fakes "$1" --port-base "$PORT_BASE" --emit-config switchback > "$config"
    "$BIN" serve --config "$config" --listen "127.0.0.1:$GATEWAY_PORT" > "$log" 2>&1 &
    GATEWAY_PID=$!
    wait_for "$GATEWAY/health" "$log"
}

start_second_switchback() { # scenario name: Switchback at $SECOND, beside the gateway
    local config="$WORK/$2.second.yaml" log="$WORK/$2.second.log"
    "$BIN" fakes "$1" --port-base "$PORT_BASE" --emit-config switchback > "$config"
    "$BIN" serve --config "$config" --listen "127.0.0.1:$SECOND_PORT" > "$log" 2>&1 &
    SECOND_PID=$!
    wait_for "$SECOND/health" "$log" "$SECOND_PID"
}

CHECKS=0
# expect_probe SCENARIO NAME EXIT [PATTERN...] -- [PROBE ARGS...]: probes the gateway
# running now; the exit status must be EXIT and the report must contain every PATTERN.
expect_probe() {
    local scenario=$1 name=$2 want=$3
    shift 3
    local patterns=()
    while [[ $# -gt 0 && "$1" != "--" ]]; do
        patterns+=("$1")
        shift
    done
    [[ $# -gt 0 ]] && shift
    local out="$WORK/$name.out"
    local code=0
    "$BIN" probe "$scenario" --gateway "$GATEWAY" --port-base "$PORT_BASE" "$@" > "$out" 2> "$WORK/$name.err" || code=$?
    sed 's/^/   | /' "$out"
    [[ "$code" == "$want" ]] || fail "$name: probe exited $code, expected $want (report: $out, progress: $WORK/$name.err)"
    for p in "${patterns[@]}"; do
        grep -qF -- "$p" "$out" || fail "$name: the report does not say: $p"
    done
    CHECKS=$((CHECKS + 1))
    echo "   ok: $name exited $code"
}

echo "== probing LiteLLM $LITELLM_VERSION"
PRIMARY="model: stream names the primary after a fallback"
MIDSTREAM="mid-stream failure that non_stream survives"
for level in gateway request; do
    s=scenarios/live/${level}_level_mock_fallbacks.yaml
    start_litellm "$s" "litellm-${level}-mock"
    expect_probe "$s" "litellm-${level}-mock" 1 "verdict: different" "$PRIMARY" -- --api-key "$MASTER"
    stop_gateway
done

s=scenarios/live/gateway_level_midstream_429.yaml
start_litellm "$s" litellm-gateway-midstream
expect_probe "$s" litellm-gateway-midstream 1 "verdict: different" "$PRIMARY" -- --api-key "$MASTER"
stop_gateway

s=scenarios/live/request_level_midstream_429.yaml
start_litellm "$s" litellm-request-midstream
# The stream ends with the provider's 429, not any other failure (a hang, a reset).
expect_probe "$s" litellm-request-midstream 1 "verdict: different" "outcome: $MIDSTREAM" "chunk(s) of text (error 429)" -- --api-key "$MASTER"
stop_gateway

# `order` as LiteLLM reads it: the primary (no order in the scenario) gets order 1, so it is
# called, and its mid-stream reset shows: 1.83.0 ends the stream cleanly, truncated.
s=scenarios/streaming/reset_after_chunks.yaml
start_litellm "$s" litellm-order-reset
expect_probe "$s" litellm-order-reset 1 "verdict: different" "text: $MIDSTREAM" -- --api-key "$MASTER"
stop_gateway

s=scenarios/live/control_no_fault.yaml
start_litellm "$s" litellm-control
expect_probe "$s" litellm-control 0 "verdict: equivalent (exit status 0)" -- --api-key "$MASTER"
stop_gateway

# The key-level scenario itself: without a database LiteLLM cannot hold the scenario's key.
s=scenarios/known_bug/key_level_fallbacks_stream.yaml
start_litellm "$s" litellm-key-level
expect_probe "$s" litellm-key-level-no-setup 3 "verdict: inconclusive" \
    "neither mode reached a provider" "create the keys with \`--setup\`" -- --api-key "$MASTER"
expect_probe "$s" litellm-key-level-setup 2 "verdict: could not run" "/team/new answered 500" \
    "No db connected" -- --setup
stop_gateway
litellm_done=$(date +%s)

echo "== probing Switchback's own gateway on the same scenarios"
for s in scenarios/live/*.yaml scenarios/known_bug/*.yaml scenarios/streaming/reset_after_chunks.yaml; do
    name="switchback-$(basename "$(dirname "$s")")-$(basename "$s" .yaml)"
    start_switchback "$s" "$name"
    expect_probe "$s" "$name" 0 "verdict: equivalent (exit status 0)"
    stop_gateway
done

switchback_done=$(date +%s)

# Differential: the same scenario through LiteLLM (A) and Switchback (B) side by side, the
# same fakes behind both; `probe --against` compares their provider calls and outcomes
# request by request and mode by mode. Where the README claims parity the calls must be the
# same; where it documents a difference, the report must show exactly that difference.
echo "== differential: LiteLLM $LITELLM_VERSION (A) against Switchback (B), call by call"
expect_diff() { # scenario name exit [pattern...]
    local s=$1 name=$2 want=$3
    shift 3
    start_litellm "$s" "$name"
    start_second_switchback "$s" "$name"
    expect_probe "$s" "$name" "$want" "$@" -- --api-key "$MASTER" --against "$SECOND"
    stop_gateway
}
SAME="verdict: same (exit status 0)"
for s in scenarios/parity/order_retry_stays_in_tier.yaml \
    scenarios/parity/order_tier_falls_back_in_group_first.yaml \
    scenarios/parity/order_tiers_then_group_fallbacks.yaml \
    scenarios/parity/lone_deployment_default_settings.yaml \
    scenarios/parity/lone_deployment_cooled_on_request.yaml \
    scenarios/parity/deployment_num_retries.yaml \
    scenarios/parity/auth_retried_on_another_deployment.yaml \
    scenarios/parity/billing_400_falls_back.yaml \
    scenarios/parity/wildcard_group_serves_requested_model.yaml \
    scenarios/parity/wildcard_fallbacks_by_requested_name.yaml \
    scenarios/parity/fallback_to_deployment_id.yaml \
    scenarios/parity/default_fallbacks_beat_a_star_entry.yaml \
    scenarios/parity/retry_after_sets_a_counted_cooldown.yaml \
    scenarios/parity/retry_after_zero_neither_cools_nor_counts.yaml; do
    expect_diff "$s" "diff-$(basename "$s" .yaml)" 0 "$SAME"
done
# Documented difference: with allowed_fails set, LiteLLM 1.83.0 cools even a lone
# deployment (after its 429, for its Retry-After of 1 s); Switchback keeps the
# lone-deployment rule and retries. The request 5 s later reaches the provider on both:
# LiteLLM's gets the 503 scripted for the second call, Switchback's the fourth call's answer.
expect_diff scenarios/parity/lone_deployment_not_cooled.yaml diff-lone-allowed-fails 1 \
    'differs: calls: 1 against 3 call(s); from call 2 on, A made (no call) and B made `solo#2 m: http 503`' \
    'differs: calls: 1 against 1 call(s); from call 1 on, A made `solo#2 m: http 503` and B made `solo#4 m: ok`' \
    "4 request-mode(s): 0 the same, 4 different"
# Documented difference: LiteLLM's proxy retries a deployment's own num_retries inside the
# completion call, where a retry_policy count does not bound them; Switchback lets the
# retry policy's count win, as the router's order says.
expect_diff scenarios/parity/deployment_num_retries_retry_policy_wins.yaml diff-deployment-retries-policy 1 \
    'differs: calls: 4 against 2 call(s); from call 3 on, A made `solo#3 m: http 500` and B made (no call)' \
    "differs: outcome: A 200, B error 500" \
    "2 request-mode(s): 0 the same, 2 different"

done_at=$(date +%s)
echo "== LiteLLM probe suite: $CHECKS checks passed in $((done_at - suite_started)) s" \
    "(venv and install $((installed - suite_started)) s, release build $((built - installed)) s," \
    "LiteLLM probes $((litellm_done - built)) s, Switchback probes $((switchback_done - litellm_done)) s," \
    "differential $((done_at - switchback_done)) s)"
