#!/usr/bin/env bash
# bench-overhead with nginx as the reference proxy, measured in the same run.
#
# nginx (Debian's nginx 1.22, `apt-get install nginx-light`) runs as a plain reverse proxy in
# front of the benchmark's `ok` fake, with an upstream keep-alive pool: the practical floor
# of one proxy hop on this machine. The fakes listen on fixed ports so nginx can be
# configured before the run. The same hop built from Switchback's own stack and nothing else
# (the `bare_proxy` example: hyper, a runtime per worker, kept upstream connections) runs
# beside it as `--floor`, so the table shows what the stack costs and what Switchback's own
# work adds over it. The gateway measured is `switchback-gateway`, the binary a deployment
# runs (`switchback serve` is the same gateway inside the harness's larger binary). Extra
# arguments go to bench-overhead, e.g.
#   bash benches/nginx-reference.sh --rate 2000 --duration 15s --rounds 3
set -euo pipefail
cd "$(dirname "$0")/.."

FAKES_PORT_BASE=${FAKES_PORT_BASE:-21300}
REFERENCE_PORT=${REFERENCE_PORT:-21390}
FLOOR_PORT=${FLOOR_PORT:-21391}
. benches/nginx.sh

dir=$(mktemp -d)
floor_pid=
trap 'nginx_stop "$dir"; [ -z "$floor_pid" ] || kill "$floor_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
nginx_start "$dir" "$REFERENCE_PORT" "$FAKES_PORT_BASE"
cargo build --release --locked -q -p switchback-sim --bin switchback --bin switchback-gateway --example bare_proxy
./target/release/examples/bare_proxy "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$FAKES_PORT_BASE" &
floor_pid=$!
./target/release/switchback bench-overhead \
    --fakes-port-base "$FAKES_PORT_BASE" \
    --reference "http://127.0.0.1:$REFERENCE_PORT" \
    --floor "http://127.0.0.1:$FLOOR_PORT" \
    --gateway-bin ./target/release/switchback-gateway "$@"
