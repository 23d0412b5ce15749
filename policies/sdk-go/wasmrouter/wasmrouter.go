// Package wasmrouter: write wasm-router routing policies in Go.
//
// A policy is a WebAssembly component the router loads at run time and
// asks, for every request, which worker should serve it. This package
// hides the component plumbing (bindings generated from the contract,
// wit/policy.wit, by wit-bindgen's Go generator; `router policy bindings
// --lang go DIR` writes them with this SDK) behind one interface, Policy,
// and one call, Register, the same shape as the Rust SDK's trait and macro:
//
//	type LeastLoad struct{ wasmrouter.Defaults }
//
//	func (LeastLoad) Init(config string) (wasmrouter.PolicyInfo, error) {
//		return wasmrouter.PolicyInfo{Name: "least_load", PerThread: true}, nil
//	}
//
//	func (LeastLoad) Select(req *wasmrouter.Request, c *wasmrouter.Candidates) (uint32, error) {
//		ids, loads := c.Ids(), c.Loads()
//		best := 0
//		for i := range ids {
//			if loads[i] < loads[best] {
//				best = i
//			}
//		}
//		return ids[best], nil
//	}
//
//	func init() { wasmrouter.Register(LeastLoad{}) }
//
// The request and candidates are lent for one Select: their getters cross
// from the router when first called and are kept for the call, and the SDK
// drops the borrowed handles when Select returns.
package wasmrouter

import (
	"runtime"
	"runtime/debug"

	needs "wit_component/wasm_router_policy_needs"
	prefix "wit_component/wasm_router_policy_prefix_index"
	types "wit_component/wasm_router_policy_types"
)

// PolicyInfo is what a policy tells the router about itself, from Init.
type PolicyInfo struct {
	// Short name, shown in logs and GET /policies.
	Name string
	// The router extracts the routing text (Request.Text, the prefix index).
	NeedsText bool
	// The router calls OnComplete after each attempt.
	WantsFeedback bool
	// How often the router calls Tick; 0 for never.
	TickIntervalMs uint32
	// One instance per router thread, for a policy that keeps no state of
	// its own between calls; otherwise one shared instance.
	PerThread bool
	// The router lends the client's headers (Request.Header).
	ReadsHeaders bool
	// The router tokenizes the text for prefix-index match-kv.
	ReadsKvMatches bool
}

// Decline is an error Select returns to refuse a request: the client gets
// a 503 with its message. Any error refuses; a panic is a fault (the
// router answers with its fallback and starts a fresh instance).
type Decline string

func (d Decline) Error() string { return string(d) }

// Policy is a routing policy: Init and Select; embed Defaults for the rest.
type Policy interface {
	Init(config string) (PolicyInfo, error)
	Select(req *Request, candidates *Candidates) (uint32, error)
	WorkersChanged(workers []types.WorkerInfo)
	OnComplete(outcome types.Outcome)
	Tick(nowMs uint64)
	Snapshot() []byte
	Restore(state []byte) error
}

// Defaults gives a policy the optional parts: embed it.
type Defaults struct{}

func (Defaults) WorkersChanged([]types.WorkerInfo) {}
func (Defaults) OnComplete(types.Outcome)          {}
func (Defaults) Tick(uint64)                       {}
func (Defaults) Snapshot() []byte                  { return nil }
func (Defaults) Restore([]byte) error              { return nil }

var registered Policy

// Register makes p the component's policy; call it from an init function.
// It also takes the collector's timing out of the host's allocations (see
// Collect).
func Register(p Policy) {
	registered = p
	debug.SetGCPercent(-1)
}

// CollectEvery is how many calls run between two collections.
const CollectEvery = 256

var calls int

// Collect runs the garbage collector every CollectEvery calls, at the start
// of a call, where the policy may call out of the component. With Go's own
// pacing, an allocation could start a collection or return memory to the
// system, and both read the clock through WASI; inside `cabi_realloc`,
// while the router copies a value in, the component model forbids calls
// out, and the instance traps. So the pacer is off (Register) and
// collections happen here.
func Collect() {
	calls++
	if calls%CollectEvery == 0 {
		runtime.GC()
	}
}

// Registered is the registered policy, for the export glue.
func Registered() Policy {
	if registered == nil {
		panic("no policy registered: call wasmrouter.Register from an init function")
	}
	return registered
}

// Declare turns info into the contract's policy-info, declaring what the
// policy reads (needs.declare): the Go bindings import every function of
// the contract, so the router cannot tell from the imports.
func Declare(info PolicyInfo) types.PolicyInfo {
	var reads needs.Reads
	if info.ReadsHeaders {
		reads |= needs.ReadsHeaders
	}
	if info.ReadsKvMatches {
		reads |= needs.ReadsKvMatches
	}
	needs.Declare(reads)
	instances := types.InstancesShared
	if info.PerThread {
		instances = types.InstancesPerThread
	}
	return types.PolicyInfo{
		Name:           info.Name,
		NeedsText:      info.NeedsText,
		WantsFeedback:  info.WantsFeedback,
		TickIntervalMs: info.TickIntervalMs,
		Instances:      instances,
	}
}

// Request is the request being routed, lent for one Select.
type Request struct {
	lent  *types.Request
	text  *string
	model *string
}

// Lent is the router's handle, for the prefix index and the bindings.
func (r *Request) Lent() *types.Request { return r.lent }

// Id is the router's sequence number of the request.
func (r *Request) Id() uint64 { return r.lent.Id() }

// Text is the routing text; empty unless PolicyInfo.NeedsText.
func (r *Request) Text() string {
	if r.text == nil {
		t := r.lent.Text()
		r.text = &t
	}
	return *r.text
}

// Model is the body's `model`; empty when absent.
func (r *Request) Model() string {
	if r.model == nil {
		m := r.lent.Model()
		r.model = &m
	}
	return *r.model
}

// RoutingKey is x-routing-key, and whether there is one.
func (r *Request) RoutingKey() (string, bool) {
	key := r.lent.RoutingKey()
	return key.SomeOr(""), key.IsSome()
}

// Header is the client's header name, and whether it was lent.
func (r *Request) Header(name string) (string, bool) {
	value := r.lent.Header(name)
	return value.SomeOr(""), value.IsSome()
}

// Candidates are the workers that may take the request (never none), lent
// for one Select; each column crosses when first read.
type Candidates struct {
	lent     *types.Candidates
	ids      []uint32
	loads    []uint32
	inFlight []uint32
}

// Lent is the router's handle, for the columns this type does not wrap.
func (c *Candidates) Lent() *types.Candidates { return c.lent }

// Ids are the candidates' worker ids.
func (c *Candidates) Ids() []uint32 {
	if c.ids == nil {
		c.ids = c.lent.Ids()
	}
	return c.ids
}

// Loads are the higher of the router's in-flight count and the worker's own.
func (c *Candidates) Loads() []uint32 {
	if c.loads == nil {
		c.loads = c.lent.Loads()
	}
	return c.loads
}

// InFlight are this router's requests in flight to each.
func (c *Candidates) InFlight() []uint32 {
	if c.inFlight == nil {
		c.inFlight = c.lent.InFlight()
	}
	return c.inFlight
}

// Lend wraps the router's handles for one Select; Release drops them.
func Lend(req *types.Request, candidates *types.Candidates) (*Request, *Candidates) {
	return &Request{lent: req}, &Candidates{lent: candidates}
}

// Release drops the borrowed handles: a call that returns holding one is
// trapped by the component model.
func Release(req *Request, candidates *Candidates) {
	req.lent.Drop()
	candidates.lent.Drop()
}

// PrefixMatch is what the router's prefix index holds of a request's text.
type PrefixMatch struct {
	TextChars    uint64
	MatchedChars uint64
	Worker       uint32
	HasWorker    bool
}

// MatchRequest is the longest prefix of req's text held for one of workers.
func MatchRequest(req *Request, workers []uint32) PrefixMatch {
	found := prefix.MatchRequest(req.lent, workers)
	return PrefixMatch{
		TextChars:    found.TextChars,
		MatchedChars: found.MatchedChars,
		Worker:       found.Worker.SomeOr(0),
		HasWorker:    found.Worker.IsSome(),
	}
}

// InsertRequest records that req's text went to worker.
func InsertRequest(req *Request, worker uint32) { prefix.InsertRequest(req.lent, worker) }
