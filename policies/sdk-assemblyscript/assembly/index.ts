// wasm-router policies in AssemblyScript.
//
// A policy is a class extending `Policy`, registered once at the top level of
// the entry file, which also re-exports the canonical ABI glue:
//
//   import { Policy, PolicyInfo, Request, Candidate, Pick, register } from "wasm-router-policy/assembly/index";
//   export * from "wasm-router-policy/assembly/exports";
//
//   class First extends Policy {
//     init(config: string): PolicyInfo { return new PolicyInfo("first"); }
//     select(req: Request, candidates: Candidate[]): Pick { return Pick.worker(candidates[0].id); }
//   }
//   register(new First());
//
// Build the entry with this package's asconfig.json, then wrap the core
// module with `router policy componentize core.wasm -o policy.wasm`.
// The types mirror wit/policy.wit; its comments say when each call happens.

/** The contract version this glue implements (wit/policy.wit's package version). */
export const CONTRACT_VERSION = "0.1.0";

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

/** What `init` tells the router; `PolicyInfo.refuse` declines the configuration. */
export class PolicyInfo {
  /** Whether the router must extract `Request.text` (costs a JSON scan per request). */
  needsText: bool = false;
  /** Whether the router calls `onComplete` after each response. */
  wantsFeedback: bool = false;
  /** How often the router calls `tick`, in milliseconds; 0 = never. */
  tickIntervalMs: u32 = 0;
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

/** What a policy sees of a request. */
export class Request {
  constructor(
    /** Router-assigned sequence number; `Outcome.requestId` matches it. */
    public id: u64,
    public route: Route,
    /** The body's `model`; empty when absent. */
    public model: string,
    /** The routing text; empty unless `PolicyInfo.needsText`. */
    public text: string,
    /** Header `x-routing-key` (or `x-smg-routing-key`), if sent. */
    public routingKey: string | null,
  ) {}
}

/** A worker that may take the request, with its in-flight load. */
export class Candidate {
  constructor(
    public id: u32,
    public load: u32,
  ) {}
}

/** How a request ended (only for policies with `wantsFeedback`). Token counts are -1 when the worker did not report them. */
export class Outcome {
  constructor(
    public requestId: u64,
    public worker: u32,
    /** HTTP status; 0 when the worker could not be reached. */
    public status: u16,
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
  abstract select(req: Request, candidates: Candidate[]): Pick;

  /** The full worker list, at start and after every change. */
  workersChanged(workers: WorkerInfo[]): void {}

  /** Feedback after a response ended. */
  onComplete(outcome: Outcome): void {}

  /** Periodic housekeeping; `nowMs` is milliseconds since the Unix epoch. */
  tick(nowMs: u64): void {}

  /** State to carry over a hot reload. */
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
