/* The cache-affine example, in C (examples/cache-affine/README.md says the
 * rule; every language's build of it picks the same).
 *
 * Build: ./build.sh here (the router writes the SDK and the bindings,
 * Debian's clang compiles, the router makes the component). */
#include "wasm_router_policy.h"

/* How much busier than the least loaded candidate the cache's worker may be. */
#define LOAD_SLACK 4
/* The share of the text (in percent) a match must cover to be followed. */
#define MIN_MATCH_PERCENT 50

const char *wr_init(const char *config, size_t config_len, wr_policy_info *info) {
    (void)config;
    (void)config_len;
    info->name = "cache_affine";
    info->needs_text = true;
    /* It keeps nothing itself (the router keeps the prefix index). */
    info->per_thread = true;
    return NULL;
}

const char *wr_select(wr_request *req, wr_candidates *candidates, uint32_t *pick) {
    size_t n = wr_candidates_len(candidates);
    const uint32_t *ids = wr_candidates_ids(candidates);
    const uint32_t *loads = wr_candidates_loads(candidates);
    size_t least = 0;
    for (size_t i = 1; i < n; i++) {
        if (loads[i] < loads[least] || (loads[i] == loads[least] && ids[i] < ids[least])) least = i;
    }
    *pick = ids[least];
    wr_prefix_match found = wr_match_request(req, ids, n);
    for (size_t i = 0; found.has_worker && i < n; i++) {
        if (ids[i] == found.worker && found.text_chars > 0 &&
            found.matched_chars * 100 >= found.text_chars * MIN_MATCH_PERCENT &&
            loads[i] <= loads[least] + LOAD_SLACK) {
            *pick = ids[i];
        }
    }
    wr_insert_request(req, *pick);
    return NULL;
}
