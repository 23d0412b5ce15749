// Write wasm-router routing policies in JavaScript or TypeScript.
//
// A policy is a WebAssembly component the router loads at run time and
// asks, for every request, which worker should serve it. This module hides
// the component plumbing (componentize-js's bindings of `wit/policy.wit`)
// behind one base class, `Policy`, and one function, `exportPolicy`, the
// same shape as the Rust SDK's trait and macro:
//
//   import { Policy, PolicyInfo, exportPolicy } from "wasm-router-policy-js";
//   class LeastLoad extends Policy {
//     init(config) { return new PolicyInfo("least_load", { perThread: true }); }
//     select(req, candidates) {
//       return candidates.all().reduce((a, b) => (b.load < a.load ? b : a)).id;
//     }
//   }
//   export const policy = exportPolicy(LeastLoad); // the contract's export
//
// Build it with `wasm-router-policy-js build app.js -o least_load.wasm`.
// What a policy reads that costs the router work per request (headers, KV
// matches) is declared in `PolicyInfo`: the bindings import every function
// of the contract, so the router cannot tell from the imports.
import * as log from "wasm-router:policy/log@0.2.0";
import * as metrics from "wasm-router:policy/metrics@0.2.0";
import { declare } from "wasm-router:policy/needs@0.2.0";
import * as prefixIndex from "wasm-router:policy/prefix-index@0.2.0";
import * as state from "wasm-router:policy/state@0.2.0";

export { log, metrics, prefixIndex, state };

/** The contract version this SDK implements. */
export const CONTRACT_VERSION = "0.2.0";

/** What a policy tells the router about itself, from `Policy.init`. */
export class PolicyInfo {
  constructor(name, options = {}) {
    this.name = name;
    this.needsText = options.needsText ?? false;
    this.wantsFeedback = options.wantsFeedback ?? false;
    this.tickIntervalMs = options.tickIntervalMs ?? 0;
    this.perThread = options.perThread ?? false;
    this.readsHeaders = options.readsHeaders ?? false;
    this.readsKvMatches = options.readsKvMatches ?? false;
  }
}

/** Throw it from `select` to refuse a request (the client gets a 503 with
 * the message). Any other exception is a fault: the router answers with
 * its fallback and starts a fresh instance. */
export class Decline extends Error {}

/** The request being routed, lent for one `select` only; each getter
 * crosses from the router when first read, and is kept for the call. */
export class Request {
  #lent;
  #cache = new Map();
  constructor(lent) {
    this.#lent = lent;
  }
  #get(name, fetch) {
    if (!this.#cache.has(name)) this.#cache.set(name, fetch());
    return this.#cache.get(name);
  }
  /** The router's handle, for `prefixIndex.matchRequest` and its kin. */
  get lent() {
    return this.#lent;
  }
  get id() {
    return this.#get("id", () => this.#lent.id());
  }
  get route() {
    return this.#get("route", () => this.#lent.route());
  }
  get model() {
    return this.#get("model", () => this.#lent.model());
  }
  get text() {
    return this.#get("text", () => this.#lent.text());
  }
  get textLength() {
    return this.#get("textLength", () => this.#lent.textLength());
  }
  get routingKey() {
    return this.#get("routingKey", () => this.#lent.routingKey());
  }
  get stream() {
    return this.#get("stream", () => this.#lent.stream());
  }
  get maxNewTokens() {
    return this.#get("maxNewTokens", () => this.#lent.maxNewTokens());
  }
  textPrefix(minBytes) {
    return this.#lent.textPrefix(minBytes);
  }
  header(name) {
    return this.#lent.header(name);
  }
}

/** The workers that may take the request (never none), lent for one
 * `select` only; each column crosses when first read, one array each, in
 * the order of `ids` (numbers as the typed arrays the bindings give: a
 * copy into a plain Array costs microseconds per candidate in the
 * interpreter). */
export class Candidates {
  #lent;
  #cache = new Map();
  constructor(lent) {
    this.#lent = lent;
  }
  #get(name, fetch) {
    if (!this.#cache.has(name)) this.#cache.set(name, fetch());
    return this.#cache.get(name);
  }
  /** Every candidate as `{ id, load }`. */
  all() {
    const loads = this.loads;
    return Array.from(this.ids, (id, i) => ({ id, load: loads[i] }));
  }
  get length() {
    return this.ids.length;
  }
  get ids() {
    return this.#get("ids", () => this.#lent.ids());
  }
  get loads() {
    return this.#get("loads", () => this.#lent.loads());
  }
  get inFlight() {
    return this.#get("inFlight", () => this.#lent.inFlight());
  }
  get reportedLoads() {
    return this.#get("reportedLoads", () => this.#lent.reportedLoads());
  }
  get queued() {
    return this.#get("queued", () => this.#lent.queued());
  }
  get halfOpen() {
    return this.#get("halfOpen", () => this.#lent.halfOpen());
  }
  get ttftEwmaUs() {
    return this.#get("ttftEwmaUs", () => this.#lent.ttftEwmaUs());
  }
  get latencyEwmaUs() {
    return this.#get("latencyEwmaUs", () => this.#lent.latencyEwmaUs());
  }
  get weights() {
    return this.#get("weights", () => this.#lent.weights());
  }
  get kvUsage() {
    return this.#get("kvUsage", () => this.#lent.kvUsage());
  }
  get prefillAhead() {
    return this.#get("prefillAhead", () => this.#lent.prefillAhead());
  }
  label(key) {
    return this.#lent.label(key);
  }
}

/** A routing policy: override `init` and `select`; the router calls the
 * others only if `init` asked for them or around hot reloads. */
export class Policy {
  init(_config) {
    throw new Error("a policy must override init");
  }
  select(_req, _candidates) {
    throw new Error("a policy must override select");
  }
  workersChanged(_workers) {}
  onComplete(_outcome) {}
  tick(_nowMs) {}
  snapshot() {
    return new Uint8Array();
  }
  restore(_state) {}
}

function declined(e) {
  // A `result`'s error crosses as the thrown value's payload.
  if (e instanceof Decline) throw e.message;
  throw e;
}

/** The contract's `policy` export for `PolicyClass`: assign it to
 * `export const policy`. */
export function exportPolicy(PolicyClass) {
  let instance = null;
  return {
    contractVersion() {
      return CONTRACT_VERSION;
    },
    init(config) {
      const policy = new PolicyClass();
      let info;
      try {
        info = policy.init(config ? JSON.parse(config) : {});
      } catch (e) {
        declined(e);
      }
      declare({ headers: info.readsHeaders, kvMatches: info.readsKvMatches });
      instance = policy;
      return {
        name: info.name,
        needsText: info.needsText,
        wantsFeedback: info.wantsFeedback,
        tickIntervalMs: info.tickIntervalMs,
        instances: info.perThread ? "per-thread" : "shared",
      };
    },
    workersChanged(workers) {
      instance.workersChanged(workers);
    },
    select(req, candidates) {
      try {
        return instance.select(new Request(req), new Candidates(candidates));
      } catch (e) {
        declined(e);
      }
    },
    onComplete(outcome) {
      instance.onComplete(outcome);
    },
    tick(nowMs) {
      instance.tick(nowMs);
    },
    snapshot() {
      return instance.snapshot();
    },
    restore(state) {
      try {
        instance.restore(state);
      } catch (e) {
        declined(e);
      }
    },
  };
}
