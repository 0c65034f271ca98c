// FIFOs, POSIX message queues and unix sockets with an external peer on real processes: each
// workload holds data in flight, is dumped, killed, restored, and verifies itself.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, waitGone, isAlive, criuBun } from "./harness";
import { dump, restore, imagesDir, cleanupImages } from "./engine-helpers";

beforeAll(async () => { await buildWorkloads(); }, 120_000);
afterAll(() => { cleanup(); cleanupImages(); });

async function dumpRestoreVerify(name: string, args: string[] = [], opts: { dumpArgs?: string[]; restoreArgs?: string[] } = {}) {
  const w = await startWorkload(name, args);
  await Bun.sleep(150);
  const dir = imagesDir(name);
  dump(w.pid, dir, opts.dumpArgs);
  await waitGone(w.pid);
  const r = await restore(dir, w.pid, opts.restoreArgs);
  await Bun.sleep(100);
  trigger(w);
  const res = await waitResult(w, 15000);
  if (!res.pass) console.error(res.text);
  expect(res.text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0);
  return { w, dir };
}

function show(dir: string, file: string): any {
  const r = criuBun(["show", `${dir}/${file}`]);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
}

describe("fifo", () => {
  test("ends in parent and child, data both ways, O_RDWR end, grown pipe, blocking and non-blocking ends", async () => {
    const { dir } = await dumpRestoreVerify("fifo");
    const files = show(dir, "files.img");
    const entries: any[] = files.entries ?? files;
    const fifos = entries.filter((e) => e.type === "FIFO");
    expect(fifos.length).toBe(5); // P: f1 read, f2 write, f3 rw; C: f1 write, f2 read
    // each fifo points at a REG entry with its path; data once per fifo (f1, f2, f3)
    for (const f of fifos) expect(entries.find((e) => e.id === f.fifo.regf_id)?.reg?.name).toMatch(/\/f[123]$/);
    const data = show(dir, "fifo-data.img");
    expect((data.entries ?? data).map((e: any) => e.bytes).sort((a: number, b: number) => a - b)).toEqual([9, 3007, 150000]);
    if (Bun.which("crit")) {
      for (const f of ["files.img", "fifo-data.img"]) {
        const p = Bun.spawnSync(["crit", "decode", "-i", `${dir}/${f}`], { stdout: "pipe", stderr: "pipe" });
        if (p.exitCode !== 0) throw new Error(`crit decode ${f} failed: ${p.stderr}`);
      }
    }
  }, 60_000);
});
