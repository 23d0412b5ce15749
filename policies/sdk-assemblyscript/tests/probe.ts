// A policy that reports what crossed the boundary, for the host's tests of
// the glue: every value the router sends comes back in a refusal message or
// a pick, every host import answers through one, and its state survives
// snapshot/restore. Routing key `trap` traps.
import {
  Candidates,
  configNumber,
  Instances,
  log,
  MetricKind,
  metrics,
  Outcome,
  Pick,
  Policy,
  PolicyInfo,
  prefixIndex,
  register,
  Request,
  state,
  WorkerInfo,
} from "../assembly/index";
export * from "../assembly/exports";

class Probe extends Policy {
  workers: string = "";
  completed: string = "";
  restored: string = "";

  init(config: string): PolicyInfo {
    if (config.includes('"refuse"')) return PolicyInfo.refuse("refusé ✓ " + config);
    const info = new PolicyInfo("prøbe ✓");
    info.needsText = true;
    info.wantsFeedback = true;
    info.tickIntervalMs = <u32>configNumber(config, "tick_ms", 0);
    if (config.includes('"per_thread"')) info.instances = Instances.PerThread;
    return info;
  }

  workersChanged(workers: WorkerInfo[]): void {
    let listed = workers.length.toString();
    for (let i = 0; i < workers.length; i++) {
      const w = workers[i];
      listed += ";" + w.id.toString() + "," + w.url + "," + w.model + "," + (<i32>w.role).toString() + "," + w.dpRank.toString();
    }
    this.workers = listed;
  }

  select(req: Request, candidates: Candidates): Pick {
    const key = req.routingKey;
    if (key === null) {
      // The busiest candidate: every load must have crossed intact.
      let best = candidates[0];
      for (let i = 1; i < candidates.length; i++) {
        if (candidates[i].load > best.load) best = candidates[i];
      }
      return Pick.worker(best.id);
    }
    if (key == "request") {
      return Pick.refuse(
        "id=" + req.id.toString() + "|route=" + (<i32>req.route).toString() + "|model=" + req.model +
        "|text=" + req.text + "|bytes=" + req.textLength.toString() + "|stream=" + (req.stream ? "1" : "0") +
        "|max=" + req.maxNewTokens.toString() + "|n=" + candidates.length.toString() +
        "|start=" + req.textPrefix(2),
      );
    }
    if (key == "columns") {
      let columns = "";
      for (let i = 0; i < candidates.length; i++) {
        columns += candidates[i].id.toString() + "," + candidates[i].load.toString() + "," +
          candidates.inFlight(i).toString() + "," + candidates.reportedLoad(i).toString() + "," +
          candidates.queued(i).toString() + "," + (candidates.halfOpen(i) ? "1" : "0") + "," +
          candidates.ttftEwmaUs(i).toString() + "," + candidates.latencyEwmaUs(i).toString() + "," +
          candidates.kvUsage(i).toString() + "," + candidates.prefillAheadRequests(i).toString() + "," +
          candidates.prefillAheadTokens(i).toString() + ";";
      }
      return Pick.refuse(columns);
    }
    if (key == "headers") {
      const tenant = req.header("X-Tenant");
      const auth = req.header("authorization");
      return Pick.refuse("tenant=" + (tenant === null ? "-" : tenant) + "|auth=" + (auth === null ? "-" : auth));
    }
    if (key == "attributes") {
      const zones = candidates.label("zone");
      let attributes = "";
      for (let i = 0; i < candidates.length; i++) {
        const zone = zones[i];
        attributes += candidates.weight(i).toString() + "," + (zone === null ? "-" : zone) + ";";
      }
      return Pick.refuse(attributes);
    }
    if (key == "host") return Pick.refuse(useTheHost(req, candidates));
    if (key == "workers") return Pick.refuse(this.workers);
    if (key == "state") return Pick.refuse("completed=" + this.completed + "|restored=" + this.restored);
    if (key == "trap") unreachable();
    return Pick.worker(0xffff_ffff);
  }

  onComplete(o: Outcome): void {
    this.completed += o.requestId.toString() + "," + o.worker.toString() + "," + o.attempt.toString() + "," +
      o.status.toString() + "," + (<i32>o.error).toString() + "," + o.ttftUs.toString() + "," +
      o.latencyUs.toString() + "," + o.promptTokens.toString() + "," + o.cachedTokens.toString() + "," +
      o.completionTokens.toString() + ";";
  }

  snapshot(): Uint8Array {
    return Uint8Array.wrap(String.UTF8.encode("probe:" + this.completed));
  }

  restore(state: Uint8Array): string | null {
    const text = String.UTF8.decode(state.buffer.slice(state.byteOffset, state.byteOffset + state.length));
    if (!text.startsWith("probe:")) return "not a probe snapshot: " + text;
    this.restored = text.substring(6);
    return null;
  }
}

/** Every host import once; what each answered, in one line. */
function useTheHost(req: Request, candidates: Candidates): string {
  log.info("probe ✓ host", ["worker", candidates[0].id.toString(), "ünï", "cödé"]);

  const counter = metrics.declare("probe_calls", MetricKind.Counter, "Calls of the probe's host route", "worker");
  counter.record(2.5, candidates[0].id.toString()); // counters count whole numbers: 2
  const bad = metrics.declare("Not A Name", MetricKind.Gauge, "refused");

  const count = state.add("calls", 1);
  const stored = state.get("blob");
  const blob = stored === null ? "none" : String.UTF8.decode(stored.buffer.slice(stored.byteOffset, stored.byteOffset + stored.length));
  const setError = state.set("blob", Uint8Array.wrap(String.UTF8.encode("blob ✓ " + count.value.toString())));
  state.remove("absent");
  const wrongWidth = state.add("blob", 1);

  const ids = candidates.ids();
  const before = prefixIndex.matchRequest(req, ids);
  prefixIndex.insertRequest(req, ids[ids.length - 1]);
  const after = prefixIndex.matchRequest(req, ids);
  const sizes = prefixIndex.sizes(ids);
  let listed = "";
  for (let i = 0; i < sizes.length; i++) listed += sizes[i].toString() + ",";

  return "calls=" + count.value.toString() + "|blob=" + blob + "|set=" + (setError === null ? "ok" : setError) +
    "|metric=" + (counter.error === null ? "ok" : "refused") + "|bad=" + (bad.error === null ? "accepted" : "refused") +
    "|add-blob=" + (wrongWidth.error === null ? "accepted" : "refused") +
    "|before=" + before.matchedChars.toString() + "/" + before.textChars.toString() + "@" + before.worker.toString() +
    "|after=" + after.matchedChars.toString() + "/" + after.textChars.toString() + "@" + after.worker.toString() +
    "|sizes=" + listed;
}

register(new Probe());
