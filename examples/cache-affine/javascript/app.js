// The cache-affine example, in JavaScript (examples/cache-affine/README.md
// says the rule; every language's build of it picks the same).
//
// Build: `./build.sh` here (npm installs componentize-js and the SDK).
import { Policy, PolicyInfo, exportPolicy, prefixIndex } from "wasm-router-policy-js";

// How much busier than the least loaded candidate the cache's worker may be.
const LOAD_SLACK = 4;
// The share of the text (in percent) a match must cover to be followed.
const MIN_MATCH_PERCENT = 50n;

class CacheAffine extends Policy {
  init(_config) {
    // It keeps nothing itself (the router keeps the prefix index), so it
    // runs one instance per router thread.
    return new PolicyInfo("cache_affine", { needsText: true, perThread: true });
  }

  select(req, candidates) {
    const { ids, loads } = candidates;
    let least = 0;
    for (let i = 1; i < ids.length; i++) {
      if (loads[i] < loads[least] || (loads[i] === loads[least] && ids[i] < ids[least])) least = i;
    }
    let pick = ids[least];
    const found = prefixIndex.matchRequest(req.lent, ids);
    const cached = found.worker === undefined ? -1 : ids.indexOf(found.worker);
    if (
      cached >= 0 &&
      found.textChars > 0n &&
      found.matchedChars * 100n >= found.textChars * MIN_MATCH_PERCENT &&
      loads[cached] <= loads[least] + LOAD_SLACK
    ) {
      pick = ids[cached];
    }
    prefixIndex.insertRequest(req.lent, pick);
    return pick;
  }
}

export const policy = exportPolicy(CacheAffine);
