// One build: asm/ -> wasm/, .proto -> src/images/gen, then `bun build --compile` -> ./criu-bun.
// Any failing step fails the build (non-zero exit).
import { $ } from "bun";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { embedDescriptors } from "./embed-descriptors";
import { START_JIT } from "../src/jit";
import { recordWarm } from "./warm-record";

const root = join(import.meta.dir, "..");
process.chdir(root);

async function step(name: string, fn: () => Promise<unknown>) {
  const t0 = performance.now();
  try {
    await fn();
  } catch (e: any) {
    const msg = e?.stderr?.toString?.() || e?.message || String(e);
    console.error(`build: ${name} failed:\n${msg}`);
    process.exit(1);
  }
  console.error(`build: ${name} (${(performance.now() - t0).toFixed(0)} ms)`);
}

mkdirSync("wasm", { recursive: true });
await step("asm -> wasm", async () => {
  for (const f of readdirSync("asm").filter((f) => f.endsWith(".ts") && !f.startsWith("_"))) {
    const out = join("wasm", f.replace(/\.ts$/, ".wasm"));
    await $`${process.execPath} node_modules/assemblyscript/bin/asc.js asm/${f} -o ${out} --optimizeLevel 3 --shrinkLevel 0 --runtime stub --noAssert --enable simd --enable bulk-memory --initialMemory 2 --exportRuntime`.quiet();
  }
});
await step("proto -> src/images/gen", async () => {
  await $`${process.execPath} node_modules/@bufbuild/buf/bin/buf generate`.quiet();
  // descriptors as object literals instead of base64 to decode at start-up (see the script)
  await embedDescriptors("src/images/gen");
  // and the descriptors built from them must be protobuf-es's own (a fresh process: this one
  // imported the files before they were rewritten)
  await $`${process.execPath} scripts/check-descriptors.ts`.quiet();
});
// --outfile PATH: the executable goes there instead of ./criu-bun
const at = process.argv.indexOf("--outfile");
const outfile = at > 0 && process.argv[at + 1] ? process.argv[at + 1] : "criu-bun";
// --define CRIU_BUN_WARM=...: the heap pages a dump and a restore touch (src/sys/warm.ts),
// recorded by running the executable of the first compile (scripts/warm-record.ts), then compiled
// in by a second. --no-warm (or a machine where a dump cannot run: no ptrace of the recording's
// sleep, no root for its restore) keeps the first, without a table.
// --define CRIU_BUN_CODEC_WASM=...: wasm/codec.wasm's bytes (base64) in the code, so that the
// executable makes its page codec without reading a file (src/codec/codec.ts).
const codecWasm = () => [
  "--define",
  `CRIU_BUN_CODEC_WASM=${JSON.stringify(JSON.stringify(readFileSync("wasm/codec.wasm").toString("base64")))}`,
];
const compile = (define: string[]) =>
  // src/codec/worker.ts: the page Workers' entry point, embedded as a second entry.
  // --compile-jit-policy: JavaScriptCore's tier-up thresholds x START_JIT (src/jit.ts). A dump or
  // restore of a small process is ~20 ms of code that runs a few times each; compiling it cost
  // more than it saved (x16 before: 1.5-3 ms more CPU per sleep dump or restore than x256). Long
  // loops (the pages of a large process, the servers) go back to x16 (jitForWork).
  // --no-compile-autoload-*: the executable reads no bunfig.toml or .env from the directory it
  // runs in (a few syscalls less per start, and a criu run as root there takes no preload or
  // environment from that directory).
  // --format=esm --splitting: each module of the dynamic imports in its own chunk, loaded (its
  // bytecode read and linked) when imported: `--version` and `--help` load only the entry's
  // chunk, a command only its own modules. One bundle of everything (the default with
  // --bytecode) made every start read the whole 3.7 MB of bytecode: --version took 11-15 ms more
  // CPU than a compiled hello-world, 4 with the chunks.
  $`${process.execPath} build --compile --bytecode --format=esm --splitting --minify-syntax --minify-whitespace --compile-jit-policy=${START_JIT} --no-compile-autoload-dotenv --no-compile-autoload-bunfig ${codecWasm()} ${define} src/main.ts src/codec/worker.ts --outfile ${outfile}`.quiet();
if (!process.argv.includes("--no-compile")) {
  await step(`bun build --compile -> ${outfile}`, () => compile([]));
  if (!existsSync(outfile)) {
    console.error(`build: ${outfile} missing`);
    process.exit(1);
  }
  if (!process.argv.includes("--no-warm")) {
    let table: Record<string, number[]> | string = "";
    await step("warm table (a dump and a restore of a sleep)", async () => {
      // a machine where the recording cannot even start (no setsid, no sleep) builds without a table too
      table = await recordWarm(outfile.includes("/") ? outfile : `./${outfile}`).catch(
        (e: unknown) => `recording failed: ${(e as Error)?.message ?? e}`
      );
    });
    if (typeof table === "string") console.error(`build: no warm table, ${outfile} built without one: ${table}`);
    else
      await step(`bun build --compile -> ${outfile}, with the warm table`, () =>
        compile(["--define", `CRIU_BUN_WARM=${JSON.stringify(JSON.stringify(table))}`])
      );
  }
}
