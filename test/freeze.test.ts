// The freeze and the signals of a target (test/workloads/freezefix.c MODE, rows in
// test/EXACT-OR-REFUSED.md group 14): a vfork in progress refused in one line and never a hang;
// seccomp on a non-main thread only (strict mode, a filter that kills the process on the calls a
// dump injects) dumped and restored; the pending signals of a stopped process dumped, restored and
// left exactly as they were by a dump -R; a leader that has exited refused in one line.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, criuBun, isAlive, startWorkload, trigger, waitResult, waitUntil } from "./harness";
import { cleanupImages, dump, imagesDir, restore, waitReaped, peer, havePeer } from "./engine-helpers";
import { UNSUPPORTED } from "../src/resources/unsupported";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const status = (pid: number) => readFileSync(`/proc/${pid}/status`, "utf8");
const field = (pid: number, key: string) => new RegExp(`^${key}:\\s*(.*)$`, "m").exec(status(pid))?.[1] ?? "";
const childOf = (pid: number) =>
  Number(readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/)[0]);

describe("vfork in progress", () => {
  test("refused in one line before anything is seized; the parent and its child run on untraced", async () => {
    const w = await startWorkload("freezefix", ["vfork"], { stderr: "file" });
    const kid = childOf(w.pid);
    const t0 = Date.now();
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("fixd-vfork")], {
      timeoutMs: 30_000,
    });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(
      new RegExp(
        `^Error \\(dump\\): process ${w.pid}: ${esc(UNSUPPORTED.vfork)} \\(child ${kid}\\) is not supported yet$`
      )
    );
    for (const p of [w.pid, kid]) expect(field(p, "TracerPid")).toBe("0");
    expect(field(w.pid, "State")).toStartWith("D");
    trigger(w);
    expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
  }, 60_000);

  test("missed by that check, the freeze gives up at its deadline (--timeout) in one line: no hang", async () => {
    const w = await startWorkload("freezefix", ["vfork"], { stderr: "file" });
    const dir = imagesDir("fixd-vfork-deadline");
    const t0 = Date.now();
    const r = criuBun(["dump", "-t", String(w.pid), "-D", dir, "--timeout", "2"], {
      timeoutMs: 30_000,
      env: { CRIU_BUN_FAULT: "vfork-check:skip" },
    });
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(2000);
    expect(took).toBeLessThan(8000);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(
      new RegExp(`^Error \\(seize\\): process ${w.pid} did not stop within 2 s \\(blocked in the kernel: state D\\)`)
    );
    expect(r.stderr.trim().split("\n").length).toBe(1);
    // criu-bun gone, the kernel let go of it: untraced, and it runs on as before
    expect(field(w.pid, "TracerPid")).toBe("0");
    trigger(w);
    expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
  }, 60_000);
});

test("leaderexit: a leader gone (pthread_exit) with threads running is refused in one line, no stack trace", async () => {
  const w = await startWorkload("freezefix", ["leaderexit"], { stderr: "file" });
  const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("fixd-leaderexit")]);
  expect(r.code).toBe(1);
  expect(r.stderr.trim()).toMatch(
    new RegExp(
      `^Error \\(dump\\): process ${w.pid}: ${esc(UNSUPPORTED["leader-exited"])} \\(threads \\d+, \\d+ run on without it\\) is not supported yet$`
    )
  );
  // runs on: the leader a zombie as before, its threads alive and untraced
  expect(field(w.pid, "State")).toStartWith("Z");
  const others = readdirSync(`/proc/${w.pid}/task`).filter((t) => Number(t) !== w.pid);
  expect(others.length).toBe(2);
  for (const t of others) {
    expect(isAlive(Number(t))).toBe(true);
    expect(field(Number(t), "TracerPid")).toBe("0");
  }
  trigger(w);
  expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
});

describe("seccomp on a non-main thread only", () => {
  const CASES: [string, string[], string][] = [
    ["strict", ["strict"], "a thread in strict mode blocked in read()"],
    ["sigaltstack", ["seckill", "131"], "a thread's filter killing the process on sigaltstack"],
    ["prctl", ["seckill", "157"], "a thread's filter killing the process on prctl"],
    ["rt_sigprocmask", ["seckill", "14"], "a thread's filter killing the process on rt_sigprocmask"],
  ];
  for (const [tag, args, what] of CASES) {
    test(`${tag}: ${what}: dumped (seccomp suspended in every thread) and restored`, async () => {
      const w = await startWorkload("freezefix", args, { stderr: "file" });
      const dir = imagesDir(`fixd-${tag}`);
      dump(w.pid, dir);
      // the thread's own seccomp in its core, the main thread's none (as CRIU 4.2 writes them)
      const log = readFileSync(join(dir, "dump.log"), "utf8");
      expect(log).not.toMatch(/exited while/);
      const r = await restore(dir, w.pid);
      trigger(w);
      expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
      expect(await r.proc.exited).toBe(0);
    }, 60_000);
  }

  test.skipIf(!havePeer)(
    "strict: criu-bun's images restored by CRIU 4.2",
    async () => {
      const w = await startWorkload("freezefix", ["strict"], { stderr: "file" });
      const dir = imagesDir("fixd-strict-peer");
      dump(w.pid, dir);
      await waitReaped(w.pid, 10_000);
      peer(["restore", "-d"], dir, "restore.log");
      await waitUntil(`restored ${w.pid}`, () => existsSync(`/proc/${w.pid}`));
      trigger(w);
      expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
    },
    60_000
  );
});

describe("pending signals of a stopped process", () => {
  test("dump -R leaves the stopped child exactly as it was: pending sets, mask, stopped, no stray SIGSTOP", async () => {
    const w = await startWorkload("freezefix", ["stoppend"], { stderr: "file" });
    const kid = childOf(w.pid);
    const keys = ["State", "ShdPnd", "SigPnd", "SigBlk", "SigCgt"];
    const before = keys.map((k) => field(kid, k));
    const dir = imagesDir("fixd-stoppend-R");
    dump(w.pid, dir, ["-R"]);
    expect(keys.map((k) => field(kid, k))).toEqual(before);
    expect(field(kid, "TracerPid")).toBe("0");
    const log = readFileSync(join(dir, "dump.log"), "utf8");
    expect(log).toMatch(new RegExp(`thread ${kid}: stopped with signals pending .*: held while injected`));
    expect(log).toMatch(new RegExp(`process ${kid}: left stopped as it was`));
    trigger(w);
    expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
  }, 60_000);

  test("a failed dump leaves them as they were too", async () => {
    const w = await startWorkload("freezefix", ["stoppend"], { stderr: "file" });
    const kid = childOf(w.pid);
    const before = ["State", "ShdPnd", "SigPnd", "SigBlk"].map((k) => field(kid, k));
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("fixd-stoppend-fail")], {
      env: { CRIU_BUN_FAULT: "dump-end" },
    });
    expect(r.code).toBe(1);
    expect(["State", "ShdPnd", "SigPnd", "SigBlk"].map((k) => field(kid, k))).toEqual(before);
    trigger(w);
    expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
  }, 60_000);

  test("dumped (2 signals shared) and restored: still stopped with both pending, each handler once after SIGCONT", async () => {
    const w = await startWorkload("freezefix", ["stoppend"], { stderr: "file" });
    const kid = childOf(w.pid);
    const dir = imagesDir("fixd-stoppend");
    dump(w.pid, dir);
    const log = readFileSync(join(dir, "dump.log"), "utf8");
    expect(log).toMatch(new RegExp(`signals: process of ${kid}: 2 pending \\(10, 64\\)`));
    const r = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  }, 60_000);

  test.skipIf(!havePeer)(
    "CRIU 4.2 dumps, criu-bun restores",
    async () => {
      const w = await startWorkload("freezefix", ["stoppend"], { stderr: "file" });
      const dir = imagesDir("fixd-stoppend-peer");
      peer(["dump", "-t", String(w.pid)], dir, "dump.log");
      await waitReaped(w.pid, 10_000);
      const r = await restore(dir, w.pid);
      trigger(w);
      expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
      expect(await r.proc.exited).toBe(0);
    },
    60_000
  );
});
