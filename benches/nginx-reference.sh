#!/usr/bin/env bash
# bench-overhead with nginx as the reference proxy, measured in the same run.
#
# nginx (Debian's nginx 1.22, `apt-get install nginx-light`) runs as a plain reverse proxy in
# front of the benchmark's `ok` fake, with an upstream keep-alive pool: the practical floor
# of one proxy hop on this machine. The fakes listen on fixed ports so nginx can be
# configured before the run. The same hop built from Switchback's own stack and nothing else
# (the `bare_proxy` example: hyper, a runtime per worker, kept upstream connections) runs
# beside it as `--floor`, so the table shows what the stack costs and what Switchback's own
# work adds over it. Extra arguments go to bench-overhead, e.g.
#   bash benches/nginx-reference.sh --rate 2000 --duration 15s --rounds 3
set -euo pipefail
cd "$(dirname "$0")/.."

FAKES_PORT_BASE=${FAKES_PORT_BASE:-21300}
REFERENCE_PORT=${REFERENCE_PORT:-21390}
FLOOR_PORT=${FLOOR_PORT:-21391}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$NGINX" ] || { echo "nginx not found: apt-get install nginx-light" >&2; exit 2; }

dir=$(mktemp -d)
floor_pid=
trap '"$NGINX" -p "$dir" -c "$dir/nginx.conf" -s stop 2>/dev/null || true; [ -z "$floor_pid" ] || kill "$floor_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/logs"
cat > "$dir/nginx.conf" <<CONF
worker_processes auto;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    upstream ok_fake {
        server 127.0.0.1:$FAKES_PORT_BASE;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$REFERENCE_PORT;
        location / {
            proxy_pass http://ok_fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
"$NGINX" -p "$dir" -c "$dir/nginx.conf"
cargo build --release --locked -q -p switchback-sim --bin switchback --example bare_proxy
./target/release/examples/bare_proxy "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$FAKES_PORT_BASE" &
floor_pid=$!
./target/release/switchback bench-overhead \
    --fakes-port-base "$FAKES_PORT_BASE" \
    --reference "http://127.0.0.1:$REFERENCE_PORT" \
    --floor "http://127.0.0.1:$FLOOR_PORT" "$@"
