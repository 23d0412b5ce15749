#!/usr/bin/env bash
# The router's own cost per request under proxy.sh's 32-connection load:
# CPU time and context switches per request, counted by `perf stat` on the
# router process alone (wrk and the upstreams share the machine but are not
# counted). Prints one line.
#
#   ./host/benches/proxy_cpu.sh [policy, default round_robin] [seconds, default 4]
#
# Installs wrk and perf (Debian) if missing. Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
policy="${1:-round_robin}"
secs="${2:-4}"
source host/benches/common.sh
need_wrk
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }

instant_upstreams
generate_lua
port=$(free_port)
# shellcheck disable=SC2086
"$router" --port "$port" --prometheus-port "$(free_port)" --policy "$policy" --worker-urls $urls \
    --max-concurrent-requests 0 --log-level warn & pids+=($!)
router_pid=$!
wait_port "$port"; sleep 1

out=$(mktemp)
wrk -t2 -c32 -d"$((secs + 2))s" -s "$lua" "http://127.0.0.1:$port/generate" >"$out" & load=$!
sleep 1
counts=$(perf stat -x, -e task-clock,context-switches -p "$router_pid" -- sleep "$secs" 2>&1)
wait "$load"
rps=$(awk '/Requests\/sec/ {print $2}' "$out")
python3 - "$rps" "$secs" "$counts" <<'PY'
import sys
rps, secs, counts = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
value = {line.split(',')[2]: float(line.split(',')[0]) for line in counts.splitlines() if line.count(',') >= 2}
requests = rps * secs
print(f"{rps:.0f} req/s, {value['task-clock'] * 1000 / requests:.1f} us CPU and "
      f"{value['context-switches'] / requests:.2f} context switches per request")
PY
