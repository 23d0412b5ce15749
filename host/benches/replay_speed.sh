#!/usr/bin/env bash
# How fast `router replay` runs (issue 34): simulated requests per second
# of wall time for a 10,000-request Mooncake-format trace (16 shared
# prefixes of 8 blocks, 2 blocks of its own each, 5 ms apart on average;
# seeded) over 8 simulated workers, per policy (round_robin, cache_aware,
# precise_cache_aware, power_of_two, consistent_hash unless POLICIES
# says), ROUNDS times (3).
# Prints each policy's median and its ratio to round_robin's.
#
#   ./host/benches/replay_speed.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
router="${ROUTER:-target/release/router}"
trace=$(mktemp)
python3 - "$trace" <<'PY'
import json, random, sys
random.seed(1)
t = 0.0
with open(sys.argv[1], "w") as f:
    for n in range(10_000):
        group = random.randrange(16)
        ids = [group * 1000 + k for k in range(8)] + [100_000 + 2 * n, 100_001 + 2 * n]
        t += random.expovariate(1 / 5)
        f.write(json.dumps({"timestamp": int(t), "input_length": len(ids) * 512 - 100,
                            "output_length": 32, "hash_ids": ids}) + "\n")
PY
policies=(${POLICIES:-round_robin cache_aware precise_cache_aware power_of_two consistent_hash})
flags=()
for p in "${policies[@]}"; do flags+=(--policy "$p"); done
runs=()
for _ in $(seq "${ROUNDS:-3}"); do
    runs+=("$("$router" replay --trace "$trace" "${flags[@]}" --capacity-tokens 40000 \
        --prefill-us-per-token 20 --decode-us-per-token 500 --serial-prefill --json 2>&1 >/dev/null |
        grep 'simulated requests/s' | sed -E 's/^([^:]+):.*\(([0-9]+) simulated.*/\1=\2/' | tr '\n' ' ')")
done
python3 - "${runs[@]}" <<'PY'
import statistics, sys
rates = {}
for run in sys.argv[1:]:
    for pair in run.split():
        name, rate = pair.split("=")
        rates.setdefault(name, []).append(float(rate))
base = statistics.median(rates["round_robin"])
print("| policy | simulated requests/s (median) | against round_robin |")
print("| --- | ---: | ---: |")
for name, r in rates.items():
    m = statistics.median(r)
    print(f"| {name} | {m:,.0f} | {m / base:.2f}x |")
PY
rm -f "$trace"
