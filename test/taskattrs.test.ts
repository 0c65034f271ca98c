// Task and thread states a dump used to lose or crash on (test/workloads/taskfix.c MODE): each
// thread's scheduling policy with SCHED_RESET_ON_FORK and its real-time priority, PR_SET_DUMPABLE 0,
// POSIX timers on CPU clocks, a sigaltstack with SS_AUTODISARM: restored exactly by criu-bun, from
// CRIU 4.2's images, and by CRIU 4.2 from criu-bun's. Refused at dump with one line and the
// target left as it was: SCHED_DEADLINE, dumpable 2, a thread CPU clock whose thread cannot be
// told, real-time signals queued over RLIMIT_SIGPENDING (restore could not queue them again).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, criuBun, isAlive, startWorkload } from "./harness";
import { cleanupImages, dump, expectPass, imagesDir, havePeer, roundTrip } from "./engine-helpers";
import { UNSUPPORTED, type UnsupportedKey } from "../src/resources/unsupported";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const EXACT: [string, string, RegExp][] = [
  [
    "sched",
    "SCHED_BATCH (nice 3) on the main thread, SCHED_IDLE, SCHED_RR 7 with SCHED_RESET_ON_FORK (nice -2) and SCHED_FIFO 3 (nice 5) on threads",
    /threads: thread \d+: scheduling SCHED_RR\|SCHED_RESET_ON_FORK priority 7/,
  ],
  ["dumpable", "PR_SET_DUMPABLE 0", /mm: process \d+: dumpable 0/],
  [
    "cputimer",
    "POSIX timers on CLOCK_PROCESS_CPUTIME_ID (-6), CLOCK_THREAD_CPUTIME_ID (-2) of the only thread, the process's own clock by its pid",
    /3 POSIX timer\(s\) restored/,
  ],
  ["altstack", "a sigaltstack with SS_AUTODISARM (bit 31 of ss_flags)", /altstack 0x/],
];

describe("restored exactly (criu-bun dumps and restores)", () => {
  for (const [mode, what, logged] of EXACT) {
    test(`${mode}: ${what}`, async () => {
      const w = await startWorkload("taskfix", [mode], { stderr: "file" });
      const dir = await roundTrip(w, { dumper: "criu-bun", restorer: "criu-bun", tag: `fixe-${mode}` });
      expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(logged);
    }, 60_000);
  }

  test("sched: the dump log names each thread's policy", async () => {
    const w = await startWorkload("taskfix", ["sched"], { stderr: "file" });
    const dir = imagesDir("fixe-sched-log");
    dump(w.pid, dir, ["-R"]);
    const log = readFileSync(join(dir, "dump.log"), "utf8");
    for (const p of ["SCHED_BATCH", "SCHED_IDLE", "SCHED_RR|SCHED_RESET_ON_FORK priority 7", "SCHED_FIFO priority 3"])
      expect(log).toContain(`, ${p}, comm`);
    await expectPass(w);
  }, 60_000);
});

describe.skipIf(!havePeer)("with CRIU 4.2", () => {
  for (const [mode, what] of EXACT) {
    for (const [dumper, restorer, said] of [
      ["criu-4.2", "criu-bun", "CRIU 4.2 dumps, criu-bun restores"],
      ["criu-bun", "criu-4.2", "criu-bun dumps, CRIU 4.2 restores"],
    ] as const) {
      test(`${mode}: ${said} ${what}`, async () => {
        const w = await startWorkload("taskfix", [mode], { stderr: "file" });
        await roundTrip(w, { dumper, restorer, tag: `fixe-${dumper}-${mode}` });
      }, 60_000);
    }
  }
});

const REFUSED: [string, UnsupportedKey, string][] = [
  ["deadline", "sched-deadline", "policy 6"],
  ["suiddump", "dumpable-suid", "dumpable 2"],
  ["threadclock", "posix-timer-clock", "clock id -2: CPU clock of the thread that made it"],
  ["sigpend", "sigpending-rlimit", "RLIMIT_SIGPENDING 2; signal(s) 35, 35, 35, 35, 35, 35"],
];

describe("refused at dump with one line; the target runs on as it was", () => {
  for (const [mode, key, detail] of REFUSED) {
    test(`${mode}: ${UNSUPPORTED[key]}`, async () => {
      const w = await startWorkload("taskfix", [mode], { stderr: "file" });
      const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir(`fixe-refuse-${mode}`)]);
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split("\n");
      expect(lines.length).toBe(1);
      expect(lines[0]).toStartWith(`Error (dump): process ${w.pid}: ${UNSUPPORTED[key]} (`);
      expect(lines[0]).toContain(detail);
      expect(lines[0]).toEndWith("is not supported yet");
      expect(isAlive(w.pid)).toBe(true);
      await expectPass(w);
    }, 60_000);
  }
});
