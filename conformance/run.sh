#!/usr/bin/env bash
# The official OpenAI SDKs (Python and Node) against `switchback serve` and the project's fakes,
# on loopback. Installs what it needs into target/ (a venv) and conformance/node/node_modules
# (npm ci, from the committed lock file); a fresh machine needs Python 3.11 + pip, Node 20 +
# npm, and the package registries. Writes target/conformance/{python,node}.json and table.md,
# and fails when a comparison differs or README.md's table is not table.md.
#
#   bash conformance/run.sh              # as CI runs it
#   bash conformance/run.sh --sabotage   # compares one case wrongly: must fail (proves it can)
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
out=target/conformance
mkdir -p "$out"
scenario=scenarios/conformance/sdk_fakes.yaml
key=sk-conformance
sabotage=()
if [[ "${1:-}" == "--sabotage" ]]; then sabotage=(--sabotage); fi

echo "== conformance: build"
cargo build --release --locked --bin switchback
bin=target/release/switchback

echo "== conformance: Python SDK (venv in $out/venv)"
venv=$out/venv
want=$(grep '^openai==' conformance/python/requirements.txt)
if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx "$want"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r conformance/python/requirements.txt -c conformance/python/constraints.txt
fi

echo "== conformance: Node SDK (npm ci in conformance/node)"
if [[ ! -f conformance/node/node_modules/openai/package.json ]] ||
   [[ conformance/node/package-lock.json -nt conformance/node/node_modules/openai/package.json ]]; then
  npm ci --prefix conformance/node --no-audit --no-fund --silent
fi

# A free run of ports on 127.0.0.1: the fakes at base.., the gateway after them. Below the
# kernel's ephemeral range, where no outgoing connection can take a port between this
# choice and its use (and a check can never meet a connection to itself).
providers=$(grep -c '^  - host:' "$scenario")
base=$(python3 - "$providers" <<'EOF'
import random, socket, sys
need = int(sys.argv[1]) + 1
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    ephemeral_low = 32768
high = max(ephemeral_low - need, 21000)
for _ in range(200):
    base = random.randrange(20000, high)
    socks = []
    try:
        for p in range(base, base + need):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in socks:
            s.close()
else:
    sys.exit("no free run of ports")
EOF
)
gateway_port=$((base + providers))

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== conformance: fakes at 127.0.0.1:$base, gateway at 127.0.0.1:$gateway_port"
"$bin" fakes "$scenario" --port-base "$base" --emit-config switchback > "$out/gateway.yaml"
"$bin" fakes "$scenario" --port-base "$base" > "$out/fakes.log" 2>&1 &
pids+=($!)
"$bin" serve --config "$out/gateway.yaml" --listen "127.0.0.1:$gateway_port" > "$out/gateway.log" 2>&1 &
pids+=($!)

fakes_json=""
for _ in $(seq 1 100); do
  if grep -q "serving $providers fake provider" "$out/fakes.log" 2>/dev/null &&
     python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$gateway_port/health', timeout=1)" 2>/dev/null; then
    fakes_json=$(python3 - "$out/fakes.log" <<'EOF'
import json, re, sys
m = dict(re.findall(r"^([\w-]+):\d+ -> (http://\S+)$", open(sys.argv[1]).read(), re.M))
print(json.dumps(m))
EOF
)
    break
  fi
  sleep 0.2
done
if [[ -z "$fakes_json" ]]; then
  echo "conformance: the fakes or the gateway did not start; see $out/fakes.log and $out/gateway.log" >&2
  exit 2
fi

status=0
"$venv/bin/python" conformance/python/suite.py --gateway "http://127.0.0.1:$gateway_port/v1" \
  --key "$key" --fakes "$fakes_json" --cases conformance/cases.json --out "$out/python.json" \
  "${sabotage[@]}" || status=1
node conformance/node/suite.mjs --gateway "http://127.0.0.1:$gateway_port/v1" \
  --key "$key" --fakes "$fakes_json" --cases conformance/cases.json --out "$out/node.json" \
  "${sabotage[@]}" || status=1

python3 conformance/table.py "$out/python.json" "$out/node.json" --out "$out/table.md" \
  --check README.md || status=1
# The `mid` case compares text only: a gateway that sent it straight to the fallback
# (the primary skipped, cooling or never called) would match as well. Every request of
# it through the gateway must have met the primary's fault and been continued on the
# fallback: as many continuations at `midf` as calls at `midp`, and some of each.
mid_primary=$(grep -c '^midp *received .*fault=error_event' "$out/fakes.log" || true)
mid_continued=$(grep -c '^midf *received .*continuation=[1-9]' "$out/fakes.log" || true)
if [[ "$mid_primary" == 0 || "$mid_primary" != "$mid_continued" ]]; then
  echo "conformance: the mid-stream case met its primary's fault $mid_primary time(s) and was continued on the fallback $mid_continued time(s) (see $out/fakes.log)" >&2
  status=1
fi
if grep -q panicked "$out/gateway.log"; then
  echo "conformance: the gateway panicked (see $out/gateway.log)" >&2
  status=1
fi
echo "== conformance: $(( $(date +%s) - started )) s, exit status $status"
exit "$status"
