#!/usr/bin/env bash
# Requests per second at 32 connections against nginx as a plain proxy, in
# one run: two instant upstreams (`router sim-worker --fixed-response`),
# nginx (one worker process per core, keepalive to the upstreams, round
# robin) and this router with round_robin and cache_aware, each measured
# ROUNDS times in turn with `wrk -t1 -c32` POSTing /generate. Prints a
# Markdown table of medians: req/s, the proxy's own CPU per request (from
# /proc: all of nginx's processes, or the router's one) and the ratio to
# nginx.
#
#   ./host/benches/nginx.sh [seconds per measurement, default 8] [rounds, default 3]
#
# Installs wrk and nginx-light (Debian) if missing. Loopback only; every
# load run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-8}"
rounds="${2:-3}"
source host/benches/common.sh
need_wrk
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq nginx-light; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

instant_upstreams
generate_lua

conf_dir=$(mktemp -d)
nginx_port=$(free_port)
cat >"$conf_dir/nginx.conf" <<CONF
worker_processes auto;
daemon off;
master_process on;
pid $conf_dir/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $conf_dir;
    proxy_temp_path $conf_dir;
    upstream workers {
        server 127.0.0.1:$up1;
        server 127.0.0.1:$up2;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://workers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF

# As the issue measured: one wrk thread.
wrk_threads=1

"$nginx_bin" -c "$conf_dir/nginx.conf" -p "$conf_dir" & pids+=($!)
nginx_master=${pids[-1]}
wait_port "$nginx_port"

declare -A ports procs
ports[nginx]=$nginx_port
for policy in round_robin cache_aware; do
    port=$(free_port)
    # shellcheck disable=SC2086
    "$router" --port "$port" --prometheus-port "$(free_port)" --policy "$policy" --worker-urls $urls \
        --max-concurrent-requests 0 --log-level warn & pids+=($!)
    wait_port "$port"
    ports[$policy]=$port
    procs[$policy]=${pids[-1]}
done
sleep 1
procs[nginx]="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"

declare -A rows
for _ in $(seq "$rounds"); do
    for name in nginx round_robin cache_aware; do
        # shellcheck disable=SC2086
        rows[$name]+="$(wrk_rate "${ports[$name]}" ${procs[$name]}) "
    done
done

python3 - "${rows[nginx]}" "${rows[round_robin]}" "${rows[cache_aware]}" <<'PY'
import statistics, sys
names = ["nginx 1.22 (plain proxy)", "wasm-router round_robin.wasm", "wasm-router cache_aware.wasm"]
runs = [[tuple(map(float, r.split("|"))) for r in arg.split()] for arg in sys.argv[1:]]
med = [(statistics.median(r for r, _ in rs), statistics.median(c for _, c in rs)) for rs in runs]
print("| proxy | req/s @32 conns (median) | all runs | CPU per request | vs nginx |")
print("| --- | ---: | --- | ---: | ---: |")
for name, rs, (rps, cpu) in zip(names, runs, med):
    every = ", ".join(f"{r:.0f}" for r, _ in rs)
    print(f"| {name} | {rps:.0f} | {every} | {cpu:.1f} µs | {rps / med[0][0]:.2f}x |")
PY
