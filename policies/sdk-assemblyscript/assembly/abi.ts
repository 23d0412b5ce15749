// The router's imports of wit/policy.wit (contract 0.2.0) as the canonical
// ABI lowers them into a core module, with strings in UTF-16 (the encoding
// `router policy componentize` declares). index.ts wraps them; policies do
// not call these directly.
//
// Results wider than one value are written at `ret`, a scratch area of the
// caller's; strings and lists the router returns are allocated with this
// module's `cabi_realloc` and freed by the wrapper that lifts them.
//   string, list (8):               pointer 0, length 4
//   option<string> (12):            tag 0, pointer 4, length 8
//   option<u32> (8):                tag 0, value 4
//   option<list<u8>> (12):          tag 0, pointer 4, length 8
//   result<u32, string> (12):       tag 0, value 4 | pointer 4, length 8
//   result<_, string> (12):         tag 0, pointer 4, length 8
//   result<s64, string> (16):       tag 0, value 8 | pointer 8, length 12
//   prefix-match (24):              text-chars 0, matched-chars 8, worker tag 16 / value 20
//   list<option<u32>> element (8):  tag 0, value 4;  list<bool> element (1)
//   list<option<string>> element (12): tag 0, pointer 4, length 8
//   list<option<f32>> element (8):  tag 0, value 4
//   tuple<string, string> (16):     pointer 0, length 4, pointer 8, length 12

// interface types: the borrowed request and candidates of one `select`.
// The canonical ABI wants a borrowed handle dropped before the export that
// received it returns.

@external("wasm-router:policy/types@0.2.0", "[resource-drop]request")
export declare function requestDrop(handle: i32): void;
@external("wasm-router:policy/types@0.2.0", "[resource-drop]candidates")
export declare function candidatesDrop(handle: i32): void;

@external("wasm-router:policy/types@0.2.0", "[method]request.id")
export declare function requestId(handle: i32): u64;
@external("wasm-router:policy/types@0.2.0", "[method]request.route")
export declare function requestRoute(handle: i32): i32;
@external("wasm-router:policy/types@0.2.0", "[method]request.model")
export declare function requestModel(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]request.text")
export declare function requestText(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]request.text-length")
export declare function requestTextLength(handle: i32): u32;
@external("wasm-router:policy/types@0.2.0", "[method]request.text-prefix")
export declare function requestTextPrefix(handle: i32, minBytes: u32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]request.routing-key")
export declare function requestRoutingKey(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]request.stream")
export declare function requestStream(handle: i32): i32;
@external("wasm-router:policy/types@0.2.0", "[method]request.max-new-tokens")
export declare function requestMaxNewTokens(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]request.header")
export declare function requestHeader(handle: i32, name: usize, nameLen: usize, ret: usize): void;

@external("wasm-router:policy/types@0.2.0", "[method]candidates.ids")
export declare function candidatesIds(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.loads")
export declare function candidatesLoads(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.in-flight")
export declare function candidatesInFlight(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.reported-loads")
export declare function candidatesReportedLoads(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.queued")
export declare function candidatesQueued(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.half-open")
export declare function candidatesHalfOpen(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.ttft-ewma-us")
export declare function candidatesTtftEwmaUs(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.latency-ewma-us")
export declare function candidatesLatencyEwmaUs(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.kv-usage")
export declare function candidatesKvUsage(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.prefill-ahead")
export declare function candidatesPrefillAhead(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.weights")
export declare function candidatesWeights(handle: i32, ret: usize): void;
@external("wasm-router:policy/types@0.2.0", "[method]candidates.label")
export declare function candidatesLabel(handle: i32, key: usize, keyLen: usize, ret: usize): void;

// interface log

@external("wasm-router:policy/log@0.2.0", "write")
export declare function logWrite(level: i32, message: usize, messageLen: usize, fields: usize, fieldsLen: usize): void;

// interface metrics

@external("wasm-router:policy/metrics@0.2.0", "declare")
export declare function metricsDeclare(
  name: usize,
  nameLen: usize,
  kind: i32,
  help: usize,
  helpLen: usize,
  labelTag: i32,
  label: usize,
  labelLen: usize,
  ret: usize,
): void;
@external("wasm-router:policy/metrics@0.2.0", "record")
export declare function metricsRecord(metric: u32, labelValue: usize, labelValueLen: usize, value: f64): void;

// interface state

@external("wasm-router:policy/state@0.2.0", "get")
export declare function stateGet(key: usize, keyLen: usize, ret: usize): void;
@external("wasm-router:policy/state@0.2.0", "set")
export declare function stateSet(key: usize, keyLen: usize, value: usize, valueLen: usize, ret: usize): void;
@external("wasm-router:policy/state@0.2.0", "remove")
export declare function stateRemove(key: usize, keyLen: usize): void;
@external("wasm-router:policy/state@0.2.0", "add")
export declare function stateAdd(key: usize, keyLen: usize, delta: i64, ret: usize): void;

// interface prefix-index

@external("wasm-router:policy/prefix-index@0.2.0", "match-request")
export declare function prefixMatchRequest(request: i32, workers: usize, workersLen: usize, ret: usize): void;
@external("wasm-router:policy/prefix-index@0.2.0", "insert-request")
export declare function prefixInsertRequest(request: i32, worker: u32): void;
@external("wasm-router:policy/prefix-index@0.2.0", "sizes")
export declare function prefixSizes(workers: usize, workersLen: usize, ret: usize): void;
@external("wasm-router:policy/prefix-index@0.2.0", "evict")
export declare function prefixEvict(maxChars: u64): void;
@external("wasm-router:policy/prefix-index@0.2.0", "retain-workers")
export declare function prefixRetainWorkers(workers: usize, workersLen: usize): void;
@external("wasm-router:policy/prefix-index@0.2.0", "clear")
export declare function prefixClear(): void;
