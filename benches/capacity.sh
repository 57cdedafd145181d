#!/usr/bin/env bash
# Capacity: `switchback load` at rising rates against nginx (a plain reverse proxy with an
# upstream keep-alive pool), Switchback and the stack's floor (`sim/examples/bare_proxy.rs`),
# interleaved per rate, each in front of the same `ok` fake, non-stream, no fault. The load
# starts the fake in its own process (`--listen`), as for every `load` run.
#   bash benches/capacity.sh                 # 4,000, 6,000 and 8,000 rps, 10 s each
#   RATES="2000 8000" SECONDS_PER_RATE=5 bash benches/capacity.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-4000 6000 8000}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-10}
FAKE_PORT=${FAKE_PORT:-21400}
NGINX_PORT=${NGINX_PORT:-21490}
SWITCHBACK_PORT=${SWITCHBACK_PORT:-21491}
FLOOR_PORT=${FLOOR_PORT:-21492}
. benches/nginx.sh

dir=$(mktemp -d)
pids=()
cleanup() {
    nginx_stop "$dir"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
cat > "$dir/scenario.yaml" <<YAML
name: capacity
seed: 1
gateway:
  allow_anonymous: true
  model_list:
    - {model_name: plain, litellm_params: {model: openai/ok-model, api_base: "http://ok:8000/v1"}, model_info: {id: plain-ok}}
  router_settings: {num_retries: 0}
providers:
  - host: ok
    model: ok-model
    default: {text: "one two three four five six seven eight nine ten", chunk_size: 5}
requests:
  - model: plain
YAML
cargo build --release --locked -q -p switchback-sim --bin switchback --example bare_proxy
bin=./target/release/switchback
"$bin" fakes "$dir/scenario.yaml" --port-base "$FAKE_PORT" --emit-config switchback > "$dir/gateway.yaml"
nginx_start "$dir" "$NGINX_PORT" "$FAKE_PORT"
# Switchback's logs (an access line per request) go to a file, as in production.
"$bin" serve --config "$dir/gateway.yaml" --listen "127.0.0.1:$SWITCHBACK_PORT" 2> "$dir/switchback.log" &
pids+=($!)
./target/release/examples/bare_proxy "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$FAKE_PORT" 2> "$dir/floor.log" &
pids+=($!)
for _ in $(seq 1 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$SWITCHBACK_PORT/health" && break
    sleep 0.1
done
for rate in $RATES; do
    for target in nginx:$NGINX_PORT switchback:$SWITCHBACK_PORT floor:$FLOOR_PORT; do
        name=${target%%:*}
        port=${target##*:}
        printf '%-10s %5s rps  ' "$name" "$rate"
        "$bin" load --gateway "http://127.0.0.1:$port" --scenario "$dir/scenario.yaml" \
            --rate "$rate" --duration "${SECONDS_PER_RATE}s" --connections 512 \
            --listen "127.0.0.1:$FAKE_PORT" 2>&1 | grep -E "errors|latency" | tr '\n' ' '
        echo
    done
done
