// The core engine on real processes: dump, kill, restore, and the workload verifies itself.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, isAlive, procState } from "./harness";
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

describe("image directory reuse", () => {
  test("restore twice from one image dir, then a chain of three dumps", async () => {
    const w = await startWorkload("counter");
    await Bun.sleep(150);
    const d1 = imagesDir("chain1");
    dump(w.pid, d1);
    // first copy from d1: killed again
    let r = await restore(d1, w.pid);
    process.kill(w.pid, "SIGKILL");
    expect(await r.proc.exited).toBe(128 + 9);
    // second copy from the same d1, then dump it again (d2), restore, dump (d3), restore
    r = await restore(d1, w.pid);
    const d2 = imagesDir("chain2");
    dump(w.pid, d2);
    expect(await r.proc.exited).toBe(128 + 9);
    r = await restore(d2, w.pid);
    const d3 = imagesDir("chain3");
    dump(w.pid, d3);
    expect(await r.proc.exited).toBe(128 + 9);
    r = await restore(d3, w.pid);
    trigger(w);
    const res = await waitResult(w, 15000);
    expect(res.text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});

describe("leave running / leave stopped", () => {
  test("--leave-running keeps the target going and the images still restore a copy", async () => {
    const w = await startWorkload("spin");
    await Bun.sleep(100);
    const dir = imagesDir("lr");
    dump(w.pid, dir, ["-R"]);
    expect(isAlive(w.pid)).toBe(true);
    const t1 = cpuTicks(w.pid);
    await Bun.sleep(300);
    expect(cpuTicks(w.pid)).toBeGreaterThan(t1); // still running
    process.kill(w.pid, "SIGKILL");
    const r = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });

  test("--leave-stopped leaves it stopped", async () => {
    const w = await startWorkload("spin");
    await Bun.sleep(100);
    dump(w.pid, imagesDir("ls"), ["-s"]);
    await Bun.sleep(100);
    expect(procState(w.pid)).toBe("T");
    const t1 = cpuTicks(w.pid);
    await Bun.sleep(300);
    expect(cpuTicks(w.pid)).toBe(t1);
    process.kill(w.pid, "SIGCONT");
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  });
});

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "latin1").replace(/^.*\) /s, "").split(" ");
  return Number(f[11]) + Number(f[12]);
}
