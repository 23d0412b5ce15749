# Shared by the benchmark scripts (sourced, run from the repository root):
# the release router (or the binary ROUTER names, built already), background
# processes cleaned up on exit, free ports, and waiting for a port to open.
# `sglang_router_venv` installs sglang-router 0.3.2 in a venv under target/
# for the comparisons.

if [ -z "${ROUTER:-}" ]; then
    cargo build --release --quiet -p wasm-router-cli --bin router
fi
router="${ROUTER:-target/release/router}"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
    echo "port $1 never opened" >&2
    exit 1
}
# Stop the last background process started.
stop_last() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

sglang_router_venv() {
    venv=target/bench-venv
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -c 'import sglang_router' 2>/dev/null || "$venv/bin/pip" install -q sglang-router==0.3.2
}

# smg 1.13 (sglang-router's successor) in its own venv under target/.
smg_venv() {
    smg=target/smg-venv/bin/smg
    [ -x "$smg" ] || { python3 -m venv target/smg-venv && target/smg-venv/bin/pip install -q smg==1.13.0; }
}

need_wrk() { command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }; }

# Two instant upstreams (`router sim-worker --fixed-response`): sets up1,
# up2 and urls (both base URLs, space-separated).
instant_upstreams() {
    up1=$(free_port); up2=$(free_port)
    for p in "$up1" "$up2"; do
        "$router" sim-worker --port "$p" --fixed-response --log-level warn & pids+=($!)
        wait_port "$p"
    done
    urls="http://127.0.0.1:$up1 http://127.0.0.1:$up2"
}

# cpu_ticks PID...: utime+stime of the processes so far, in clock ticks.
cpu_ticks() {
    local total=0 p
    for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$total"
}

# wrk_rate PORT [PID...]: "req/s|proxy CPU us per request" of 32
# connections (wrk with $wrk_threads threads, 2 unless set) for $secs
# seconds through the proxy on PORT, wrk's script $lua; the CPU of the
# PIDs (the last process started unless given) from /proc.
wrk_rate() {
    local port=$1 before out
    shift
    [ $# -gt 0 ] || set -- "${pids[-1]}"
    before=$(cpu_ticks "$@")
    out=$(wrk -t"${wrk_threads:-2}" -c32 -d"${secs}s" -s "$lua" "http://127.0.0.1:$port/generate")
    python3 - "$out" "$(($(cpu_ticks "$@") - before))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
out, ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
n = int(re.search(r"(\d+) requests in", out).group(1))
print(f"{rps:.0f}|{ticks / hz / n * 1e6:.1f}")
PY
}

# A wrk script that POSTs /generate with a 52-character prompt: sets lua.
generate_lua() {
    lua=$(mktemp)
    cat >"$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"text": "What is the capital of France? Answer in one word."}'
LUA
}
