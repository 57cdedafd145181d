#!/usr/bin/env bash
# Capacity: `switchback load` at rising rates against nginx (a plain reverse proxy with an
# upstream keep-alive pool), Switchback and the stack's floor (`sim/examples/bare_proxy.rs`),
# interleaved per rate, each in front of the same `ok` fake, non-stream, no fault. The load
# starts the fake in its own process (`--listen`), as for every `load` run. Each line ends
# with the CPU the proxy itself used per request (user + system time of its processes over
# the run, from /proc): on these shared cores capacity is CPU, and a slower machine moves
# every latency figure, but far less what each request costs.
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
cargo build --release --locked -q -p switchback-sim --bin switchback --bin switchback-gateway --example bare_proxy
bin=./target/release/switchback
"$bin" fakes "$dir/scenario.yaml" --port-base "$FAKE_PORT" --emit-config switchback > "$dir/gateway.yaml"
nginx_start "$dir" "$NGINX_PORT" "$FAKE_PORT"
# Switchback's logs (an access line per request) go to a file, as in production.
./target/release/switchback-gateway --config "$dir/gateway.yaml" --listen "127.0.0.1:$SWITCHBACK_PORT" 2> "$dir/switchback.log" &
pids+=($!)
./target/release/examples/bare_proxy "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$FAKE_PORT" 2> "$dir/floor.log" &
pids+=($!)
for _ in $(seq 1 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$SWITCHBACK_PORT/health" && break
    sleep 0.1
done
switchback_pid=${pids[0]}
floor_pid=${pids[1]}
# The processes that make up a target: nginx is its master and its workers.
processes() {
    case $1 in
        nginx) local master; master=$(cat "$dir/nginx.pid"); echo "$master" $(pgrep -P "$master") ;;
        switchback) echo "$switchback_pid" ;;
        floor) echo "$floor_pid" ;;
    esac
}
# Clock ticks of CPU (user + system, every thread) the processes have used so far.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
tick_us=$((1000000 / $(getconf CLK_TCK)))
for rate in $RATES; do
    for target in nginx:$NGINX_PORT switchback:$SWITCHBACK_PORT floor:$FLOOR_PORT; do
        name=${target%%:*}
        port=${target##*:}
        procs=$(processes "$name")
        printf '%-10s %5s rps  ' "$name" "$rate"
        before=$(cpu_ticks $procs)
        "$bin" load --gateway "http://127.0.0.1:$port" --scenario "$dir/scenario.yaml" \
            --rate "$rate" --duration "${SECONDS_PER_RATE}s" --connections 512 \
            --listen "127.0.0.1:$FAKE_PORT" 2>&1 | grep -E "errors|latency" | tr '\n' ' '
        used=$(($(cpu_ticks $procs) - before))
        echo " cpu $((used * tick_us / (rate * SECONDS_PER_RATE))) µs/request"
    done
done
