// wasm-router policies in AssemblyScript, contract 0.2.0 (wit/policy.wit).
//
// A policy is a class extending `Policy`, registered once at the top level of
// the entry file, which also re-exports the canonical ABI glue:
//
//   import { Candidates, Pick, Policy, PolicyInfo, Request, register } from "wasm-router-policy/assembly/index";
//   export * from "wasm-router-policy/assembly/exports";
//
//   class First extends Policy {
//     init(config: string): PolicyInfo { return new PolicyInfo("first"); }
//     select(req: Request, candidates: Candidates): Pick { return Pick.worker(candidates[0].id); }
//   }
//   register(new First());
//
// Build the entry with this package's asconfig.json, then wrap the core
// module with `router policy componentize core.wasm -o policy.wasm`.
// The types mirror wit/policy.wit; its comments say when each call happens.
// Besides the policy's own calls, the router offers `log`, `metrics`,
// `state` (a key-value store every instance shares, kept over reloads and
// faults) and `prefixIndex` (a prefix index held by the router).

import * as abi from "./abi";
import { IMPORT_AREA, liftBools, liftBytes, liftOptionF32s, liftOptionStrings, liftOptionU32s, liftString, liftStringAt, liftU32s, liftU64s } from "./memory";

/** The contract version this glue implements (wit/policy.wit's package version). */
export const CONTRACT_VERSION = "0.2.0";

/** The route a request came in on. */
export enum Route {
  Generate = 0,
  Completions = 1,
  ChatCompletions = 2,
  Embeddings = 3,
  Other = 4,
}

/** What part a worker plays (prefill/decode disaggregation). */
export enum Role {
  Regular = 0,
  Prefill = 1,
  Decode = 2,
}

/** How many instances of the policy the router runs. */
export enum Instances {
  /** One per serving thread, with no lock between them: for policies that keep nothing private between calls (or only what `state` and `prefixIndex` hold). */
  PerThread = 0,
  /** One for the whole router: calls never overlap, and the router serialises them. */
  Shared = 1,
}

/** Why an attempt failed (`Outcome.error`). */
export enum ErrorKind {
  /** The attempt did not fail. */
  None = -1,
  Connect = 0,
  Timeout = 1,
  Status = 2,
  ClientAbort = 3,
  BrokenBody = 4,
  Cancelled = 5,
}

/** What `init` tells the router; `PolicyInfo.refuse` declines the configuration. */
export class PolicyInfo {
  /** Whether the router must extract `Request.text` (costs a JSON scan per request). */
  needsText: bool = false;
  /** Whether the router calls `onComplete` after each attempt. */
  wantsFeedback: bool = false;
  /** How often the router calls `tick`, in milliseconds; 0 = never. */
  tickIntervalMs: u32 = 0;
  /** One instance per serving thread, or one shared. */
  instances: Instances = Instances.Shared;
  /** Set by `refuse`: the router will not load the policy, and says why. */
  error: string | null = null;

  constructor(public name: string) {}

  /** Decline to load, with a message that says what to fix. */
  static refuse(message: string): PolicyInfo {
    const info = new PolicyInfo("");
    info.error = message;
    return info;
  }
}

/** A worker known to the router. */
export class WorkerInfo {
  constructor(
    public id: u32,
    public url: string,
    /** Model served; empty when unknown. */
    public model: string,
    public role: Role,
    /** Data-parallel rank, or -1 when the worker is not expanded per rank. */
    public dpRank: i64,
  ) {}
}

/**
 * What a policy sees of a request: a handle the router lends for one
 * `select`. Each getter asks the router and copies only that value (strings
 * once, then cached); do not keep the object past the call.
 */
export class Request {
  private cachedModel: string | null = null;
  private cachedText: string | null = null;
  private keyFetched: bool = false;
  private cachedKey: string | null = null;

  /** `handle` is the borrowed `request` of the canonical ABI. */
  constructor(readonly handle: i32) {}

  /** Router-assigned sequence number; `Outcome.requestId` matches it. */
  get id(): u64 {
    return abi.requestId(this.handle);
  }

  get route(): Route {
    return <Route>abi.requestRoute(this.handle);
  }

  /** The body's `model`; empty when absent. */
  get model(): string {
    let model = this.cachedModel;
    if (model === null) {
      abi.requestModel(this.handle, IMPORT_AREA);
      model = liftStringAt(IMPORT_AREA);
      this.cachedModel = model;
    }
    return model;
  }

  /** The routing text; empty unless `PolicyInfo.needsText`. */
  get text(): string {
    let text = this.cachedText;
    if (text === null) {
      abi.requestText(this.handle, IMPORT_AREA);
      text = liftStringAt(IMPORT_AREA);
      this.cachedText = text;
    }
    return text;
  }

  /** Length of the routing text in UTF-8 bytes, without copying it (0 unless `needsText`). */
  get textLength(): u32 {
    return abi.requestTextLength(this.handle);
  }

  /**
   * The routing text's start: its shortest prefix of at least `minBytes`
   * UTF-8 bytes that ends on a character boundary (all of it when shorter),
   * copying only that much. Each call asks the router.
   */
  textPrefix(minBytes: u32): string {
    abi.requestTextPrefix(this.handle, minBytes, IMPORT_AREA);
    return liftStringAt(IMPORT_AREA);
  }

  /** Header `x-routing-key` (or `x-smg-routing-key`), if sent. */
  get routingKey(): string | null {
    if (!this.keyFetched) {
      abi.requestRoutingKey(this.handle, IMPORT_AREA);
      this.cachedKey = load<u8>(IMPORT_AREA) == 0 ? null : liftStringAt(IMPORT_AREA + 4);
      this.keyFetched = true;
    }
    return this.cachedKey;
  }

  /** Whether the client asked for a streamed answer. */
  get stream(): bool {
    return abi.requestStream(this.handle) != 0;
  }

  /** `max_tokens` (or its synonyms) from the body, -1 when absent. */
  get maxNewTokens(): i64 {
    abi.requestMaxNewTokens(this.handle, IMPORT_AREA);
    return load<u8>(IMPORT_AREA) == 0 ? -1 : <i64>load<u32>(IMPORT_AREA, 4);
  }

  /**
   * The client's header `name` (any case; several values joined with ", "),
   * null when absent or not UTF-8, and always for `authorization`,
   * `proxy-authorization` and `cookie`. Each call asks the router; a policy
   * that calls it is lent the headers, one that does not costs nothing.
   */
  header(name: string): string | null {
    abi.requestHeader(this.handle, changetype<usize>(name), name.length, IMPORT_AREA);
    return load<u8>(IMPORT_AREA) == 0 ? null : liftStringAt(IMPORT_AREA + 4);
  }
}

/** A worker that may take the request: its id and load (in flight from this router, or its own count when higher). */
export class Candidate {
  constructor(
    public id: u32,
    public load: u32,
  ) {}
}

/**
 * The workers that may take a request (never empty), lent for one `select`
 * like `Request`. Index it as an array (`candidates[i].load`); the other
 * signals are columns fetched from the router on first use.
 */
export class Candidates {
  private listed: Candidate[] | null = null;
  private idColumn: u32[] | null = null;
  private inFlightColumn: u32[] | null = null;
  private reportedColumn: StaticArray<i64> | null = null;
  private queuedColumn: StaticArray<i64> | null = null;
  private halfOpenColumn: StaticArray<bool> | null = null;
  private ttftColumn: StaticArray<i64> | null = null;
  private latencyColumn: StaticArray<i64> | null = null;
  private weightColumn: u32[] | null = null;
  private kvUsageColumn: StaticArray<f32> | null = null;
  /** `prefill-ahead`'s records, flat: requests and tokens of each candidate. */
  private prefillAheadColumn: u32[] | null = null;

  /** `handle` is the borrowed `candidates` of the canonical ABI. */
  constructor(readonly handle: i32) {}

  get length(): i32 {
    return this.ids().length;
  }

  @operator("[]")
  private at(index: i32): Candidate {
    return this.list()[index];
  }

  /** All candidates with their loads. */
  list(): Candidate[] {
    let listed = this.listed;
    if (listed === null) {
      const ids = this.ids();
      abi.candidatesLoads(this.handle, IMPORT_AREA);
      const loads = liftU32s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      listed = new Array<Candidate>(ids.length);
      for (let i = 0; i < ids.length; i++) listed[i] = new Candidate(ids[i], loads[i]);
      this.listed = listed;
    }
    return listed;
  }

  /** Their worker ids, in order (for `prefixIndex` calls). */
  ids(): u32[] {
    let ids = this.idColumn;
    if (ids === null) {
      abi.candidatesIds(this.handle, IMPORT_AREA);
      ids = liftU32s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      this.idColumn = ids;
    }
    return ids;
  }

  /** Requests in flight from this router to candidate `i`. */
  inFlight(i: i32): u32 {
    let column = this.inFlightColumn;
    if (column === null) {
      abi.candidatesInFlight(this.handle, IMPORT_AREA);
      column = liftU32s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      this.inFlightColumn = column;
    }
    return column[i];
  }

  /** Candidate `i`'s own count of requests at its last `/get_load`, -1 when it reports none. */
  reportedLoad(i: i32): i64 {
    let column = this.reportedColumn;
    if (column === null) {
      abi.candidatesReportedLoads(this.handle, IMPORT_AREA);
      column = liftOptionU32s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      this.reportedColumn = column;
    }
    return column[i];
  }

  /** Of those, the requests waiting in candidate `i`'s queue, -1 when it does not say. */
  queued(i: i32): i64 {
    let column = this.queuedColumn;
    if (column === null) {
      abi.candidatesQueued(this.handle, IMPORT_AREA);
      column = liftOptionU32s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      this.queuedColumn = column;
    }
    return column[i];
  }

  /** Whether candidate `i`'s circuit breaker is half-open (it takes trial requests only). */
  halfOpen(i: i32): bool {
    let column = this.halfOpenColumn;
    if (column === null) {
      abi.candidatesHalfOpen(this.handle, IMPORT_AREA);
      column = liftBools(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      this.halfOpenColumn = column;
    }
    return column[i];
  }

  /**
   * This router's moving average of candidate `i`'s time to first byte over
   * its successful responses, in microseconds; -1 before the first.
   */
  ttftEwmaUs(i: i32): i64 {
    let column = this.ttftColumn;
    if (column === null) {
      abi.candidatesTtftEwmaUs(this.handle, IMPORT_AREA);
      column = liftOptionU32s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      this.ttftColumn = column;
    }
    return column[i];
  }

  /** The same for the time to a response's end. */
  latencyEwmaUs(i: i32): i64 {
    let column = this.latencyColumn;
    if (column === null) {
      abi.candidatesLatencyEwmaUs(this.handle, IMPORT_AREA);
      column = liftOptionU32s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      this.latencyColumn = column;
    }
    return column[i];
  }

  /**
   * The share of candidate `i`'s KV cache its requests hold at its last
   * `/get_load` (SGLang's `num_tokens` over `max_total_num_tokens`; queued
   * prompts count, so it can pass 1); -1 when it does not say.
   */
  kvUsage(i: i32): f32 {
    let column = this.kvUsageColumn;
    if (column === null) {
      abi.candidatesKvUsage(this.handle, IMPORT_AREA);
      column = liftOptionF32s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      this.kvUsageColumn = column;
    }
    return column[i];
  }

  /**
   * The requests this router sent candidate `i` whose answer has not begun
   * (no body byte yet): with `prefillAheadTokens`, the prefill ahead of a
   * new request there, as far as this router knows (other replicas'
   * requests are in `queued`, the worker's own count).
   */
  prefillAheadRequests(i: i32): u32 {
    return this.prefillAhead()[2 * i];
  }

  /** Their prompt tokens that candidate `i` must compute (not in its KV cache when routed). */
  prefillAheadTokens(i: i32): u32 {
    return this.prefillAhead()[2 * i + 1];
  }

  private prefillAhead(): u32[] {
    let column = this.prefillAheadColumn;
    if (column === null) {
      abi.candidatesPrefillAhead(this.handle, IMPORT_AREA);
      // A record of two u32 is two u32 in memory: lift the list flat.
      column = liftU32s(load<u32>(IMPORT_AREA), 2 * load<u32>(IMPORT_AREA, 4));
      this.prefillAheadColumn = column;
    }
    return column;
  }

  /** Candidate `i`'s share of traffic relative to the others, as its worker entry gave it (1 unless given). */
  weight(i: i32): u32 {
    let column = this.weightColumn;
    if (column === null) {
      abi.candidatesWeights(this.handle, IMPORT_AREA);
      column = liftU32s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
      this.weightColumn = column;
    }
    return column[i];
  }

  /** Each candidate's value of label `key`, in order; null where it has none. Each call asks the router: keep what you read. */
  label(key: string): Array<string | null> {
    abi.candidatesLabel(this.handle, changetype<usize>(key), key.length, IMPORT_AREA);
    return liftOptionStrings(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
  }
}

/** How an attempt ended (only for policies with `wantsFeedback`). Optional numbers are -1 when unknown. */
export class Outcome {
  constructor(
    public requestId: u64,
    public worker: u32,
    /** 1 for the first try of a request, 2 for its first retry, and so on. */
    public attempt: u32,
    /** HTTP status; 0 when the worker answered none. */
    public status: u16,
    public error: ErrorKind,
    /** Microseconds to the first byte of the answer. */
    public ttftUs: i64,
    public latencyUs: u64,
    public promptTokens: i64,
    public cachedTokens: i64,
    public completionTokens: i64,
  ) {}
}

/** The answer of `select`: a candidate's id, or a refusal the client gets as a 503. */
export class Pick {
  private constructor(
    public readonly id: u32,
    public readonly error: string | null,
  ) {}

  /** Route to this candidate. */
  static worker(id: u32): Pick {
    return new Pick(id, null);
  }

  /** Refuse the request; the message reaches the client. */
  static refuse(message: string): Pick {
    return new Pick(0, message);
  }
}

/** A routing policy. Override `init` and `select`; the rest have defaults. */
export abstract class Policy {
  /** Called once with the configuration, a JSON object (see `configNumber`). */
  abstract init(config: string): PolicyInfo;

  /** Pick one of `candidates` (never empty). */
  abstract select(req: Request, candidates: Candidates): Pick;

  /** The full worker list, at start and after every change. */
  workersChanged(workers: WorkerInfo[]): void {}

  /** Feedback after an attempt ended, failed attempts included. */
  onComplete(outcome: Outcome): void {}

  /** Periodic housekeeping; `nowMs` is milliseconds since the Unix epoch. */
  tick(nowMs: u64): void {}

  /** State to carry over a hot reload (and, for a shared instance, a fault). */
  snapshot(): Uint8Array {
    return new Uint8Array(0);
  }

  /** Take over a `snapshot` (possibly of an older build); return an error message to start fresh. */
  restore(state: Uint8Array): string | null {
    return null;
  }
}

let registered: Policy | null = null;

/** Make `policy` the one the router talks to. Call once, at the top level. */
export function register(policy: Policy): void {
  registered = policy;
}

/** The registered policy; traps with a clear message if there is none. */
export function current(): Policy {
  const policy = registered;
  if (policy === null) {
    throw new Error("no policy registered: call register(new YourPolicy()) at the top level");
  }
  return policy;
}

/**
 * A number from a flat JSON object such as the `init` configuration, or
 * `fallback` when the key is absent or not a number. It handles the router's
 * own config (a flat object of numbers, strings and booleans); it is not a
 * general JSON parser.
 */
export function configNumber(config: string, key: string, fallback: f64): f64 {
  const at = config.indexOf('"' + key + '"');
  if (at < 0) return fallback;
  let i = at + key.length + 2;
  while (i < config.length && (config.charCodeAt(i) == 0x20 || config.charCodeAt(i) == 0x3a)) i++;
  let end = i;
  while (end < config.length) {
    const c = config.charCodeAt(end);
    const numeric = (c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x2b || c == 0x2e || c == 0x65 || c == 0x45;
    if (!numeric) break;
    end++;
  }
  if (end == i) return fallback;
  const value = parseFloat(config.substring(i, end));
  return isNaN(value) ? fallback : value;
}

/** Severity of a `log` line. */
export enum Level {
  Debug = 0,
  Info = 1,
  Warn = 2,
  Error = 3,
}

/** Structured lines in the router's log, tagged with the policy, rate-limited by the router. */
export namespace log {
  /** One line; `fields` alternate keys and values (`["worker", "3"]`). Past 1 KiB, text is cut. */
  export function write(level: Level, message: string, fields: string[] = []): void {
    const pairs = fields.length >> 1;
    const lowered: usize = pairs == 0 ? 0 : heap.alloc(<usize>pairs << 4);
    for (let i = 0; i < pairs; i++) {
      const key = fields[i << 1];
      const value = fields[(i << 1) + 1];
      const at = lowered + (<usize>i << 4);
      store<u32>(at, <u32>changetype<usize>(key));
      store<u32>(at, <u32>key.length, 4);
      store<u32>(at, <u32>changetype<usize>(value), 8);
      store<u32>(at, <u32>value.length, 12);
    }
    abi.logWrite(level, changetype<usize>(message), message.length, lowered, pairs);
    if (pairs != 0) heap.free(lowered);
  }

  export function debug(message: string, fields: string[] = []): void {
    write(Level.Debug, message, fields);
  }

  export function info(message: string, fields: string[] = []): void {
    write(Level.Info, message, fields);
  }

  export function warn(message: string, fields: string[] = []): void {
    write(Level.Warn, message, fields);
  }

  export function error(message: string, fields: string[] = []): void {
    write(Level.Error, message, fields);
  }
}

/** What `record` does with a metric's values. */
export enum MetricKind {
  /** Adds the value (never negative). */
  Counter = 0,
  /** Sets the value. */
  Gauge = 1,
  /** Observes the value. */
  Histogram = 2,
}

/** A metric the policy declared; the router exports it on `/metrics` with a `policy` label. */
export class Metric {
  constructor(
    readonly handle: u32,
    /** Why the router refused the declaration; `record` then does nothing. */
    readonly error: string | null,
  ) {}

  /** Record `value`, under `labelValue` if the metric was declared with a label. */
  record(value: f64, labelValue: string = ""): void {
    if (this.error === null) abi.metricsRecord(this.handle, changetype<usize>(labelValue), labelValue.length, value);
  }
}

export namespace metrics {
  /** Declare a metric (name: lower-case letters, digits and `_`, at most 64) with an optional label key. */
  export function declare(name: string, kind: MetricKind, help: string, label: string | null = null): Metric {
    const labelText = label === null ? "" : label;
    abi.metricsDeclare(
      changetype<usize>(name),
      name.length,
      kind,
      changetype<usize>(help),
      help.length,
      label === null ? 0 : 1,
      changetype<usize>(labelText),
      labelText.length,
      IMPORT_AREA,
    );
    if (load<u8>(IMPORT_AREA) == 0) return new Metric(load<u32>(IMPORT_AREA, 4), null);
    return new Metric(0, liftStringAt(IMPORT_AREA + 4));
  }
}

/** The sum `state.add` returns, or why it could not add. */
export class Sum {
  constructor(
    readonly value: i64,
    readonly error: string | null,
  ) {}
}

/** A key-value store the router holds for the policy: shared by its instances, kept over reloads and faults, bounded. */
export namespace state {
  export function get(key: string): Uint8Array | null {
    abi.stateGet(changetype<usize>(key), key.length, IMPORT_AREA);
    if (load<u8>(IMPORT_AREA) == 0) return null;
    return liftBytes(load<u32>(IMPORT_AREA, 4), load<u32>(IMPORT_AREA, 8));
  }

  /** Store `value` at `key`; an error message when a bound would be passed. */
  export function set(key: string, value: Uint8Array): string | null {
    abi.stateSet(changetype<usize>(key), key.length, value.dataStart, value.length, IMPORT_AREA);
    return load<u8>(IMPORT_AREA) == 0 ? null : liftStringAt(IMPORT_AREA + 4);
  }

  /** Remove `key`; removing an absent key is not an error. */
  export function remove(key: string): void {
    abi.stateRemove(changetype<usize>(key), key.length);
  }

  /** Add `delta` to the number at `key` (absent is 0): a counter every instance shares. */
  export function add(key: string, delta: i64): Sum {
    abi.stateAdd(changetype<usize>(key), key.length, delta, IMPORT_AREA);
    if (load<u8>(IMPORT_AREA) == 0) return new Sum(load<i64>(IMPORT_AREA, 8), null);
    return new Sum(0, liftStringAt(IMPORT_AREA + 8));
  }
}

/** What `prefixIndex.matchRequest` found. */
export class PrefixMatch {
  constructor(
    /** Characters in the routing text (0 unless `needsText`). */
    readonly textChars: u64,
    /** Characters of the longest prefix held for one of the workers asked about. */
    readonly matchedChars: u64,
    /** The worker holding it, -1 when nothing matched. */
    readonly worker: i64,
  ) {}
}

/** The router's prefix index of routed text per worker, shared by every instance of the policy. */
export namespace prefixIndex {
  /** The longest prefix of the request's routing text held for one of `workers`. */
  export function matchRequest(req: Request, workers: u32[]): PrefixMatch {
    abi.prefixMatchRequest(req.handle, workers.dataStart, workers.length, IMPORT_AREA);
    const worker: i64 = load<u8>(IMPORT_AREA, 16) == 0 ? -1 : <i64>load<u32>(IMPORT_AREA, 20);
    return new PrefixMatch(load<u64>(IMPORT_AREA), load<u64>(IMPORT_AREA, 8), worker);
  }

  /** Record that the request's routing text went to `worker`. */
  export function insertRequest(req: Request, worker: u32): void {
    abi.prefixInsertRequest(req.handle, worker);
  }

  /** Characters held for each of `workers`, in their order. */
  export function sizes(workers: u32[]): u64[] {
    abi.prefixSizes(workers.dataStart, workers.length, IMPORT_AREA);
    return liftU64s(load<u32>(IMPORT_AREA), load<u32>(IMPORT_AREA, 4));
  }

  /** Trim each worker's share to at most `maxChars`, least recently used first. */
  export function evict(maxChars: u64): void {
    abi.prefixEvict(maxChars);
  }

  /** Forget every worker not in `workers`. */
  export function retainWorkers(workers: u32[]): void {
    abi.prefixRetainWorkers(workers.dataStart, workers.length);
  }

  /** Forget everything. */
  export function clear(): void {
    abi.prefixClear();
  }
}
