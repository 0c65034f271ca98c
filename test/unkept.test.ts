// Settings of a process or thread that no field of CRIU's images holds (CRIU 4.2 loses them at
// restore): each is refused at dump in one line naming the process or thread, and the workload
// (test/workloads/prctlfix.c MODE) finds its setting still there afterwards. refusals.test.ts runs
// the tsc mode as the entry's own case; these are the other settings the same entry covers.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, isAlive, criuBun } from "./harness";
import { imagesDir, cleanupImages } from "./engine-helpers";
import { UNSUPPORTED } from "../src/resources/unsupported";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const CASES: [mode: string, thread: boolean, detail: RegExp][] = [
  ["tsc", false, /PR_SET_TSC 2/],
  ["mce", true, /PR_MCE_KILL 1/],
  ["mdwe", false, /PR_SET_MDWE 0x1/],
  ["slack", true, /timer slack 1000000 ns/],
  ["ioprio", false, /I\/O priority 0x4007/],
  ["sud", false, /syscall user dispatch, mode 1/],
];

describe("settings CRIU's images have no field for: refused, the process runs on with them", () => {
  for (const [mode, thread, detail] of CASES) {
    test(`${mode}: refused in one line naming the ${thread ? "thread" : "process"}; still set after`, async () => {
      const w = await startWorkload("prctlfix", [mode], { stderr: "file" });
      const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir(`unkept-${mode}`)]);
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        new RegExp(
          `^Error \\(dump\\): process ${w.pid}${thread ? " thread \\d+" : ""}: ${esc(UNSUPPORTED["unkept-state"])} \\(.*\\) is not supported yet$`
        )
      );
      expect(lines[0]).toMatch(detail);
      expect(isAlive(w.pid)).toBe(true);
      expect(await Bun.file(`/proc/${w.pid}/status`).text()).toMatch(/TracerPid:\s*0\n/);
      trigger(w);
      const res = await waitResult(w, 10_000);
      expect(res.text).toStartWith("PASS");
    });
  }
});
