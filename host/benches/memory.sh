#!/usr/bin/env bash
# The router's memory under sustained load, never scraped: RSS after each of
# ROUNDS rounds of 15 s of wrk (32 connections, POST /generate) against two
# instant upstreams. Flat is the promise (RELIABILITY.md, bounded memory).
# POLICY (round_robin unless set), PROMPT_BYTES (a 52-character prompt
# unless set; the prompts then differ request to request) and INSTANCES
# (--policy-instances, the router's default unless set) vary the run.
#
#   ./host/benches/memory.sh [rounds, default 4]
#
# Installs wrk (Debian) if missing. Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-4}"
source host/benches/common.sh
need_wrk

instant_upstreams
generate_lua
if [ -n "${PROMPT_BYTES:-}" ]; then
    cat >"$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local pad = string.rep("All work and no play makes a router a dull proxy. ", math.ceil($PROMPT_BYTES / 50))
local n = 0
request = function()
    n = n + 1
    return wrk.format(nil, nil, nil, '{"text": "' .. string.sub(pad, 1, $PROMPT_BYTES - 12) .. ' q' .. n .. '"}')
end
LUA
fi
instances=()
[ -n "${INSTANCES:-}" ] && instances=(--policy-instances "$INSTANCES")
port=$(free_port)
# shellcheck disable=SC2086
"$router" --port "$port" --prometheus-port "$(free_port)" --policy "${POLICY:-round_robin}" --worker-urls $urls \
    --max-concurrent-requests 0 --log-level warn "${instances[@]}" & pids+=($!)
wait_port "$port"
router_pid=${pids[-1]}
# RSS, and of it the anonymous memory (the rest maps the binary's code and
# data: file pages, shared by all routers on a host and reclaimable).
rss() {
    awk '/^VmRSS/ {r = $2} /^RssAnon/ {a = $2} END {printf "%d kB | %d kB", r, a}' "/proc/$router_pid/status"
}
echo "| after | requests (total) | router RSS | of it anonymous |"
echo "| --- | ---: | ---: | ---: |"
echo "| start | 0 | $(rss) |"
total=0
for round in $(seq "$rounds"); do
    n=$(wrk -t2 -c32 -d15s -s "$lua" "http://127.0.0.1:$port/generate" | awk '/requests in/ {print $1}')
    total=$((total + n))
    sleep 6 # past the recorder's 5 s upkeep
    echo "| round $round | $total | $(rss) |"
done
