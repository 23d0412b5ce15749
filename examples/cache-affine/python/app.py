"""The cache-affine example, in Python (`examples/cache-affine/README.md`
says the rule; every language's build of it picks the same).

Build: `./build.sh` here (a venv with componentize-py and the SDK), or
`wasm-router-policy build app -o cache_affine.wasm` with the SDK installed.
"""

import wasm_router_policy as wr
from wasm_router_policy import prefix_index

# How much busier than the least loaded candidate the cache's worker may be.
LOAD_SLACK = 4
# The share of the text (in percent) a match must cover to be followed.
MIN_MATCH_PERCENT = 50


class CacheAffine(wr.Policy):
    def init(self, config):
        # It keeps nothing itself (the router keeps the prefix index), so
        # it runs one instance per router thread.
        return wr.PolicyInfo("cache_affine", needs_text=True, per_thread=True)

    def select(self, req, candidates):
        ids, loads = candidates.ids, candidates.loads
        least = min(range(len(ids)), key=lambda i: (loads[i], ids[i]))
        pick = ids[least]
        found = prefix_index.match_request(req.lent, ids)
        if (
            found.worker is not None
            and found.worker in ids
            and found.text_chars > 0
            and found.matched_chars * 100 >= found.text_chars * MIN_MATCH_PERCENT
            and loads[ids.index(found.worker)] <= loads[least] + LOAD_SLACK
        ):
            pick = found.worker
        prefix_index.insert_request(req.lent, pick)
        return pick


Policy = wr.export(CacheAffine)
