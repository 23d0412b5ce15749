// An example custom policy in AssemblyScript: session affinity by routing
// key, with bounded load. The same logic as examples/rust-policy, so the two
// can be compared (BENCHMARKS.md).
//
// Requests carrying a routing key (`x-routing-key` or `x-smg-routing-key`)
// stick to the worker their key was first given. If that worker is loaded
// past `max_load_factor` times the mean, the key moves to the least-loaded
// candidate and stays there. Requests without a key go to the least loaded.
//
// Build: ./build.sh (npm ci, npm run build, router policy componentize).

import { Candidates, configNumber, Pick, Policy, PolicyInfo, Request, WorkerInfo, register } from "wasm-router-policy/assembly/index";
export * from "wasm-router-policy/assembly/exports";

class Assignment {
  constructor(
    public worker: u32,
    /** Order of assignment, to forget the oldest first. */
    public at: u64,
  ) {}
}

/** The least-loaded candidate; ties go to the smaller id. */
function leastLoaded(candidates: Candidates): u32 {
  let best = candidates[0];
  for (let i = 1; i < candidates.length; i++) {
    const c = candidates[i];
    if (c.load < best.load || (c.load == best.load && c.id < best.id)) best = c;
  }
  return best.id;
}

class SessionAffinity extends Policy {
  maxLoadFactor: f64 = 1.25;
  maxKeys: i32 = 100_000;
  sticky: Map<string, Assignment> = new Map();
  assigned: u64 = 0;

  init(config: string): PolicyInfo {
    this.maxLoadFactor = configNumber(config, "max_load_factor", 1.25);
    const maxKeys = configNumber(config, "max_keys", 100_000);
    if (!(this.maxLoadFactor >= 1.0) || !(maxKeys >= 1.0)) {
      return PolicyInfo.refuse("session_affinity_as: max_load_factor must be at least 1 and max_keys above 0");
    }
    this.maxKeys = <i32>Math.min(maxKeys, <f64>i32.MAX_VALUE);
    return new PolicyInfo("session_affinity_as");
  }

  /** The most load a sticky worker may have: the factor times the mean, counting this request, and never below one. */
  loadBound(candidates: Candidates): u32 {
    let total: u64 = 1;
    for (let i = 0; i < candidates.length; i++) total += candidates[i].load;
    const mean = <f64>total / <f64>candidates.length;
    return <u32>Math.max(Math.ceil(mean * this.maxLoadFactor), 1.0);
  }

  remember(key: string, worker: u32): void {
    if (this.sticky.size >= this.maxKeys && !this.sticky.has(key)) {
      const keys = this.sticky.keys();
      let oldest = keys[0];
      for (let i = 1; i < keys.length; i++) {
        if (this.sticky.get(keys[i]).at < this.sticky.get(oldest).at) oldest = keys[i];
      }
      this.sticky.delete(oldest);
    }
    this.assigned += 1;
    this.sticky.set(key, new Assignment(worker, this.assigned));
  }

  select(req: Request, candidates: Candidates): Pick {
    const fallback = leastLoaded(candidates);
    const key = req.routingKey;
    if (key === null) return Pick.worker(fallback);
    if (this.sticky.has(key)) {
      const worker = this.sticky.get(key).worker;
      const bound = this.loadBound(candidates);
      for (let i = 0; i < candidates.length; i++) {
        const c = candidates[i];
        if (c.id == worker && c.load <= bound) return Pick.worker(worker);
      }
    }
    this.remember(key, fallback);
    return Pick.worker(fallback);
  }

  workersChanged(workers: WorkerInfo[]): void {
    const live = new Set<u32>();
    for (let i = 0; i < workers.length; i++) live.add(workers[i].id);
    const keys = this.sticky.keys();
    for (let i = 0; i < keys.length; i++) {
      if (!live.has(this.sticky.get(keys[i]).worker)) this.sticky.delete(keys[i]);
    }
  }

  /** One line per key: worker, tab, order, tab, key. */
  snapshot(): Uint8Array {
    let out = "";
    const keys = this.sticky.keys();
    for (let i = 0; i < keys.length; i++) {
      const a = this.sticky.get(keys[i]);
      out += a.worker.toString() + "\t" + a.at.toString() + "\t" + keys[i] + "\n";
    }
    return Uint8Array.wrap(String.UTF8.encode(out));
  }

  restore(state: Uint8Array): string | null {
    const text = String.UTF8.decode(state.buffer.slice(state.byteOffset, state.byteOffset + state.length));
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (line.length == 0) continue;
      const first = line.indexOf("\t");
      const second = first < 0 ? -1 : line.indexOf("\t", first + 1);
      if (second < 0) return "bad snapshot line: " + line;
      const worker = line.substring(0, first);
      const at = line.substring(first + 1, second);
      if (!isDigits(worker) || !isDigits(at)) return "bad snapshot line: " + line;
      const order = U64.parseInt(at);
      if (order > this.assigned) this.assigned = order;
      this.sticky.set(line.substring(second + 1), new Assignment(U32.parseInt(worker), order));
    }
    return null;
  }
}

function isDigits(text: string): bool {
  if (text.length == 0) return false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

register(new SessionAffinity());
