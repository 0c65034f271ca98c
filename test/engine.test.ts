// The core engine on real processes: dump, kill, restore, and the workload verifies itself.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, isAlive } from "./harness";
import { dump, restore, imagesDir, cleanupImages } from "./engine-helpers";

beforeAll(async () => { await buildWorkloads(); }, 120_000);
afterAll(() => { cleanup(); cleanupImages(); });

async function dumpRestoreVerify(name: string, args: string[] = [], opts: { settle?: number } = {}) {
  const w = await startWorkload(name, args);
  await Bun.sleep(opts.settle ?? 200);
  const dir = imagesDir(name);
  dump(w.pid, dir);
  expect(isAlive(w.pid)).toBe(false);
  const r = await restore(dir, w.pid);
  await Bun.sleep(100);
  trigger(w);
  const res = await waitResult(w, 15000);
  expect(res.text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0); // criu-bun exits with the restored process's status
  return { w, dir };
}

describe("single process", () => {
  test("counter: memory, heap, TLS, brk, guard pages survive", async () => {
    await dumpRestoreVerify("counter");
  });
});

describe("threads", () => {
  test("8 threads keep TIDs, counters, TLS and stacks", async () => {
    await dumpRestoreVerify("threads", ["8"]);
  });
});

describe("blocked in a syscall at dump time", () => {
  for (const mode of ["read", "read-eintr", "nanosleep", "futex", "poll"]) {
    test(`${mode} resumes correctly`, async () => {
      await dumpRestoreVerify("block", [mode]);
    });
  }
});

describe("signals and timers", () => {
  test("handlers, blocked+pending signals, itimer, POSIX timer", async () => {
    await dumpRestoreVerify("signals");
  });
});

describe("files", () => {
  test("append log, rw offset, ro offset, O_PATH, devices, cloexec, shared file mapping", async () => {
    await dumpRestoreVerify("files");
  });
});
