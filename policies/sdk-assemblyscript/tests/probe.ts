// A policy that reports what crossed the boundary, for the host's tests of
// the glue: every value the router sends comes back in a refusal message or
// a pick, and its state survives snapshot/restore.
import { Candidate, configNumber, Outcome, Pick, Policy, PolicyInfo, Request, WorkerInfo, register } from "../assembly/index";
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

  select(req: Request, candidates: Candidate[]): Pick {
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
        "|text=" + req.text + "|n=" + candidates.length.toString(),
      );
    }
    if (key == "workers") return Pick.refuse(this.workers);
    if (key == "state") return Pick.refuse("completed=" + this.completed + "|restored=" + this.restored);
    return Pick.worker(0xffff_ffff);
  }

  onComplete(o: Outcome): void {
    this.completed += o.requestId.toString() + "," + o.worker.toString() + "," + o.status.toString() + "," +
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

register(new Probe());
