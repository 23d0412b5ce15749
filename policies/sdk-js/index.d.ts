// Types of the wasm-router policy SDK (index.js): the contract's types
// (`wit/policy.wit`, 0.2.0) as componentize-js gives them to JavaScript.
// u64 values are bigints; options are `undefined` when absent.

export type Route = "generate" | "completions" | "chat-completions" | "embeddings" | "other";
export type Role = "regular" | "prefill" | "decode";
export type ErrorKind =
  | "connect"
  | "timeout"
  | "status"
  | "client-abort"
  | "broken-body"
  | "cancelled";

export interface WorkerInfo {
  id: number;
  url: string;
  model: string;
  role: Role;
  dpRank?: number;
}

export interface Outcome {
  requestId: bigint;
  worker: number;
  attempt: number;
  status: number;
  error?: ErrorKind;
  ttftUs?: bigint;
  latencyUs: bigint;
  promptTokens?: number;
  cachedTokens?: number;
  completionTokens?: number;
}

export interface PrefillWork {
  requests: number;
  tokens: number;
}

/** The router's handle on a lent request (`Request.lent`). */
export interface LentRequest {
  readonly __lentRequest: unique symbol;
}

export declare const CONTRACT_VERSION: "0.2.0";

export interface PolicyInfoOptions {
  /** The router extracts the routing text (`Request.text`, the prefix index). */
  needsText?: boolean;
  /** The router calls `onComplete` after each attempt. */
  wantsFeedback?: boolean;
  /** How often the router calls `tick` (0: never). */
  tickIntervalMs?: number;
  /** One instance per router thread (the policy keeps nothing itself). */
  perThread?: boolean;
  /** The router lends the client's headers (`Request.header`). */
  readsHeaders?: boolean;
  /** The router tokenizes the text for `prefixIndex.matchKv`. */
  readsKvMatches?: boolean;
}

export declare class PolicyInfo {
  constructor(name: string, options?: PolicyInfoOptions);
  name: string;
  needsText: boolean;
  wantsFeedback: boolean;
  tickIntervalMs: number;
  perThread: boolean;
  readsHeaders: boolean;
  readsKvMatches: boolean;
}

/** Throw it from `select` to refuse a request with a 503 and the message. */
export declare class Decline extends Error {}

export declare class Request {
  readonly lent: LentRequest;
  readonly id: bigint;
  readonly route: Route;
  readonly model: string;
  readonly text: string;
  readonly textLength: number;
  readonly routingKey: string | undefined;
  readonly stream: boolean;
  readonly maxNewTokens: number | undefined;
  textPrefix(minBytes: number): string;
  header(name: string): string | undefined;
}

export interface Candidate {
  id: number;
  load: number;
}

export declare class Candidates {
  all(): Candidate[];
  readonly length: number;
  readonly ids: Uint32Array;
  readonly loads: Uint32Array;
  readonly inFlight: Uint32Array;
  readonly reportedLoads: (number | undefined)[];
  readonly queued: (number | undefined)[];
  readonly halfOpen: boolean[];
  readonly ttftEwmaUs: (number | undefined)[];
  readonly latencyEwmaUs: (number | undefined)[];
  readonly weights: Uint32Array;
  readonly kvUsage: (number | undefined)[];
  readonly prefillAhead: PrefillWork[];
  label(key: string): (string | undefined)[];
}

export declare class Policy {
  init(config: Record<string, unknown>): PolicyInfo;
  select(req: Request, candidates: Candidates): number;
  workersChanged(workers: WorkerInfo[]): void;
  onComplete(outcome: Outcome): void;
  tick(nowMs: bigint): void;
  snapshot(): Uint8Array;
  restore(state: Uint8Array): void;
}

/** The contract's `policy` export: `export const policy = exportPolicy(MyPolicy)`. */
export declare function exportPolicy(policyClass: new () => Policy): unknown;

export declare namespace log {
  type Level = "debug" | "info" | "warn" | "error";
  function write(level: Level, message: string, fields: [string, string][]): void;
}

export declare namespace metrics {
  type Kind = "counter" | "gauge" | "histogram";
  /** Throws the router's refusal as a string. */
  function declare(name: string, kind: Kind, help: string, label: string | undefined): number;
  function record(metric: number, labelValue: string, value: number): void;
}

export declare namespace state {
  function get(key: string): Uint8Array | undefined;
  /** Throws the router's refusal as a string. */
  function set(key: string, value: Uint8Array): void;
  function remove(key: string): void;
  function add(key: string, delta: bigint): bigint;
}

export declare namespace prefixIndex {
  interface PrefixMatch {
    textChars: bigint;
    matchedChars: bigint;
    worker: number | undefined;
  }
  interface KvMatch {
    gpu: number;
    cpu: number;
    disk: number;
  }
  interface KvPrefix {
    promptTokens: number;
    matches: (KvMatch | undefined)[];
  }
  type Workers = Uint32Array | number[];
  function matchRequest(req: LentRequest, workers: Workers): PrefixMatch;
  function insertRequest(req: LentRequest, worker: number): void;
  function sizes(workers: Workers): BigUint64Array;
  function evict(maxChars: bigint): void;
  function retainWorkers(workers: Workers): void;
  function clear(): void;
  function matchKv(req: LentRequest, workers: Workers): KvPrefix;
}
