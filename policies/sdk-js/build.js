#!/usr/bin/env node
// `wasm-router-policy-js build APP.(js|ts) -o FILE.wasm`: bundle the policy
// and this SDK into one ES module with esbuild (TypeScript compiled on the
// way), then make a component of it with componentize-js against the
// contract this package carries. What the router would refuse is left out:
// componentize-js's `wasi:http` imports (the `http` and `fetch-event`
// features). The library API is used, not `jco componentize`, whose bundled
// tools run without file access (issue 33).
import { componentize } from "@bytecodealliance/componentize-js";
import { build } from "esbuild";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// The contract, copied in by `prepare` when the package is installed.
const wit = join(dirname(fileURLToPath(import.meta.url)), "contract", "policy.wit");

function usage(message) {
  console.error(`${message}\nusage: wasm-router-policy-js build APP.js|APP.ts -o FILE.wasm`);
  process.exit(2);
}

async function main(argv) {
  if (argv[0] === "wit") {
    console.log(wit);
    return;
  }
  if (argv[0] !== "build") usage(`unknown command ${argv[0] ?? "(none)"}`);
  const app = argv[1];
  const o = argv.indexOf("-o");
  if (!app || o < 0 || !argv[o + 1]) usage("the app and -o FILE.wasm are required");
  const out = argv[o + 1];
  const dir = await mkdtemp(join(tmpdir(), "wasm-router-policy-"));
  try {
    const bundle = join(dir, "policy.js");
    await build({
      entryPoints: [app],
      bundle: true,
      format: "esm",
      platform: "neutral",
      external: ["wasm-router:*"],
      outfile: bundle,
      logLevel: "warning",
    });
    const { component } = await componentize({
      sourcePath: bundle,
      witPath: wit,
      worldName: "routing-policy",
      disableFeatures: ["http", "fetch-event"],
    });
    await writeFile(out, component);
    console.log(`${out}: ${component.length} bytes`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e?.stack ?? String(e));
  process.exit(1);
});
