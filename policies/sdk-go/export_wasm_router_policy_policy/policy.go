// Package export_wasm_router_policy_policy is where wit-bindgen's Go
// bindings look for the contract's exported functions. The SDK's glue: each
// calls the policy registered with wasmrouter.Register.
package export_wasm_router_policy_policy

import (
	"wit_component/wasmrouter"
	types "wit_component/wasm_router_policy_types"

	witRuntime "go.bytecodealliance.org/pkg/wit/runtime"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

func ContractVersion() string { return "0.2.0" }

func Init(config string) witTypes.Result[types.PolicyInfo, string] {
	info, err := wasmrouter.Registered().Init(config)
	if err != nil {
		return witTypes.Err[types.PolicyInfo, string](err.Error())
	}
	return witTypes.Ok[types.PolicyInfo, string](wasmrouter.Declare(info))
}

func WorkersChanged(workers []types.WorkerInfo) {
	wasmrouter.Registered().WorkersChanged(workers)
}

func Select(req *types.Request, candidates *types.Candidates) witTypes.Result[uint32, string] {
	wasmrouter.Collect()
	r, c := wasmrouter.Lend(req, candidates)
	defer wasmrouter.Release(r, c)
	// What the router copied in during the call (the columns read) stays
	// pinned until unpinned; the bindings unpin in init, workers-changed
	// and restore only, so a policy that only selects would never free it.
	defer witRuntime.Unpin()
	pick, err := wasmrouter.Registered().Select(r, c)
	if err != nil {
		return witTypes.Err[uint32, string](err.Error())
	}
	return witTypes.Ok[uint32, string](pick)
}

func OnComplete(outcome types.Outcome) { wasmrouter.Registered().OnComplete(outcome) }

func Tick(nowMs uint64) { wasmrouter.Registered().Tick(nowMs) }

func Snapshot() []uint8 { return wasmrouter.Registered().Snapshot() }

func Restore(state []uint8) witTypes.Result[witTypes.Unit, string] {
	if err := wasmrouter.Registered().Restore(state); err != nil {
		return witTypes.Err[witTypes.Unit, string](err.Error())
	}
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}
