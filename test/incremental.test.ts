// pre-dump, then dump --prev-images-dir: unchanged pages are stored once, restore follows the
// parent links (a chain of two pre-dumps here).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, readdirSync, statSync, readlinkSync, existsSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, isAlive, criuBun } from "./harness";
import { imagesDir, cleanupImages, restore } from "./engine-helpers";

beforeAll(async () => { await buildWorkloads(); }, 120_000);
afterAll(() => { cleanup(); cleanupImages(); });

test("pre-dump, pre-dump, dump: the last one stores only what changed and restores through its parents", async () => {
  const w = await startWorkload("spin", ["32", "--pattern=heap"]);
  await Bun.sleep(150);
  const base = imagesDir("incr");
  for (const d of ["pre1", "pre2", "final"]) mkdirSync(join(base, d));
  let r = criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre1"), "--track-mem"]);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  expect(isAlive(w.pid)).toBe(true); // pre-dump leaves it running
  r = criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre2"), "--prev-images-dir", "../pre1", "--track-mem"]);
  expect(r.code).toBe(0);
  r = criuBun(["dump", "-t", String(w.pid), "-D", join(base, "final"), "--prev-images-dir", "../pre2", "--track-mem", "-v4", "-o", "dump.log"]);
  expect(r.code).toBe(0);
  expect(readlinkSync(join(base, "final", "parent"))).toBe("../pre2");
  const size = (d: string) => readdirSync(join(base, d)).filter((f) => /^pages-\d+\.img$/.test(f)).reduce((s, f) => s + statSync(join(base, d, f)).size, 0);
  expect(size("pre1")).toBeGreaterThan(20 << 20); // the heap
  expect(size("final")).toBeLessThan(size("pre1") / 20); // only the pages that changed
  const pm = JSON.parse(Bun.spawnSync(["crit", "decode", "-i", join(base, "final", `pagemap-${w.pid}.img`), "--pretty"]).stdout.toString());
  expect(pm.entries.some((e: any) => e.flags === "PE_PARENT")).toBe(true);
  const rr = await restore(join(base, "final"), w.pid);
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS"); // its memory hash matches
  expect(await rr.proc.exited).toBe(0);
  expect(existsSync(join(base, "pre1", `pagemap-${w.pid}.img`))).toBe(true);
});
