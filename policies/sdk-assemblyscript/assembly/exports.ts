// The canonical ABI of wit/policy.wit (contract 0.2.0, interface `policy`),
// by hand, for the registered policy.
//
// Re-export this module from the policy's entry file. Names use `_` where
// the WIT names use `-` (AssemblyScript cannot export a `-`) and leave out
// the interface; `router policy componentize` spells them out
// (`select` -> `wasm-router:policy/policy@0.2.0#select`). Strings cross as
// UTF-16, the encoding componentize declares, so AssemblyScript strings pass
// as they are.
//
// Memory: the router allocates parameters with `cabi_realloc` and hands them
// over; each export lifts them into managed objects and frees the raw
// memory. Results point into managed objects, kept alive in `retained` until
// the router calls the matching `cabi_post_*` after reading them.
//
// Layouts (offsets in bytes, from the canonical ABI's size and alignment rules):
//   worker-info (32):          id 0, url 4/8, model 12/16, role 20, dp-rank tag 24 / value 28
//   result<policy-info,string> (24): tag 0, name 4/8, needs-text 12, wants-feedback 13, tick 16, instances 20 | err 4/8
//   result<u32,string> (12):   tag 0, ok 4 | err 4/8
//   result<_,string> (12):     tag 0, err 4/8
//   string, list<u8> (8):      pointer 0, length 4

import { Candidates, CONTRACT_VERSION, current, ErrorKind, Outcome, Request, WorkerInfo } from "./index";
import * as abi from "./abi";
import { liftBytes, liftString } from "./memory";

/** Where multi-value results are written; the router reads it before the next call. */
const RETURN_AREA: usize = memory.data(24, 8);

/** The managed object a result points into, alive until post-return. */
let retained: Object | null = null;

/** Allocation for the router, outside the garbage collector. */
export function cabi_realloc(ptr: usize, oldSize: usize, align: usize, newSize: usize): usize {
  if (newSize == 0) {
    if (oldSize != 0) heap.free(ptr);
    return align;
  }
  if (oldSize == 0) return heap.alloc(newSize);
  return heap.realloc(ptr, newSize);
}

function optionU32(tag: u32, value: u32): i64 {
  return tag == 0 ? -1 : <i64>value;
}

/** Write a string's (pointer, length) at `at` and keep the string alive. */
function lowerString(at: usize, value: string): void {
  retained = value;
  store<u32>(at, <u32>changetype<usize>(value));
  store<u32>(at, <u32>value.length, 4);
}

function release(_ret: usize): void {
  retained = null;
}

export function contract_version(): usize {
  lowerString(RETURN_AREA, CONTRACT_VERSION);
  return RETURN_AREA;
}

export function cabi_post_contract_version(ret: usize): void {
  release(ret);
}

export function init(ptr: usize, len: usize): usize {
  const info = current().init(liftString(ptr, len));
  const error = info.error;
  if (error !== null) {
    store<u8>(RETURN_AREA, 1);
    lowerString(RETURN_AREA + 4, error);
  } else {
    store<u8>(RETURN_AREA, 0);
    lowerString(RETURN_AREA + 4, info.name);
    store<u8>(RETURN_AREA, info.needsText ? 1 : 0, 12);
    store<u8>(RETURN_AREA, info.wantsFeedback ? 1 : 0, 13);
    store<u32>(RETURN_AREA, info.tickIntervalMs, 16);
    store<u8>(RETURN_AREA, <u8>info.instances, 20);
  }
  return RETURN_AREA;
}

export function cabi_post_init(ret: usize): void {
  release(ret);
}

export function workers_changed(ptr: usize, len: usize): void {
  const workers = new Array<WorkerInfo>();
  for (let i: usize = 0; i < len; i++) {
    const at = ptr + i * 32;
    workers.push(
      new WorkerInfo(
        load<u32>(at),
        liftString(load<u32>(at, 4), load<u32>(at, 8)),
        liftString(load<u32>(at, 12), load<u32>(at, 16)),
        load<u8>(at, 20),
        optionU32(load<u8>(at, 24), load<u32>(at, 28)),
      ),
    );
  }
  if (len != 0) heap.free(ptr);
  current().workersChanged(workers);
}

export function select(request: i32, candidates: i32): usize {
  const pick = current().select(new Request(request), new Candidates(candidates));
  abi.requestDrop(request);
  abi.candidatesDrop(candidates);
  const error = pick.error;
  if (error !== null) {
    store<u8>(RETURN_AREA, 1);
    lowerString(RETURN_AREA + 4, error);
  } else {
    store<u8>(RETURN_AREA, 0);
    store<u32>(RETURN_AREA, pick.id, 4);
  }
  return RETURN_AREA;
}

export function cabi_post_select(ret: usize): void {
  release(ret);
}

export function on_complete(
  requestId: u64,
  worker: u32,
  attempt: u32,
  status: u32,
  errorTag: u32,
  error: u32,
  ttftTag: u32,
  ttftUs: u64,
  latencyUs: u64,
  promptTag: u32,
  prompt: u32,
  cachedTag: u32,
  cached: u32,
  completionTag: u32,
  completion: u32,
): void {
  current().onComplete(
    new Outcome(
      requestId,
      worker,
      attempt,
      <u16>status,
      errorTag == 0 ? ErrorKind.None : <ErrorKind>error,
      ttftTag == 0 ? -1 : <i64>ttftUs,
      latencyUs,
      optionU32(promptTag, prompt),
      optionU32(cachedTag, cached),
      optionU32(completionTag, completion),
    ),
  );
}

export function tick(nowMs: u64): void {
  current().tick(nowMs);
}

export function snapshot(): usize {
  const state = current().snapshot();
  retained = state;
  store<u32>(RETURN_AREA, <u32>state.dataStart);
  store<u32>(RETURN_AREA, <u32>state.length, 4);
  return RETURN_AREA;
}

export function cabi_post_snapshot(ret: usize): void {
  release(ret);
}

export function restore(ptr: usize, len: usize): usize {
  const error = current().restore(liftBytes(ptr, len));
  if (error !== null) {
    store<u8>(RETURN_AREA, 1);
    lowerString(RETURN_AREA + 4, error);
  } else {
    store<u8>(RETURN_AREA, 0);
  }
  return RETURN_AREA;
}

export function cabi_post_restore(ret: usize): void {
  release(ret);
}
