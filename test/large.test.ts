// Large processes (issue 11): a process with 10,000 fds of mixed kinds and 5,000 VMAs is dumped
// and restored, and checks every fd and every mapping itself (test/workloads/large.c). The cost
// of a dump must grow linearly with the process: criu-bun's CPU time for 4 times the fds and
// VMAs is compared with that of a quarter of them (CPU time, not wall time: the machine may be
// busy; before the fix the fd part grew with the square of the fd count, 279 s frozen for 10,000).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { buildWorkloads, cleanup, criuBunCommand, REPO_ROOT, startWorkload, trigger, waitResult } from "./harness";
import { restore, imagesDir, cleanupImages, waitReaped } from "./engine-helpers";

beforeAll(async () => { await buildWorkloads(); }, 120_000);
afterAll(() => { cleanup(); cleanupImages(); });

/** dump pid into dir; criu-bun's CPU seconds and the frozen time it reports */
function timedDump(pid: number, dir: string) {
  const r = Bun.spawnSync([...criuBunCommand(), "dump", "-t", String(pid), "-D", dir, "-o", "dump.log", "-v4", "--display-stats"], {
    cwd: REPO_ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: 240_000,
  });
  const out = r.stdout.toString() + r.stderr.toString();
  if (r.exitCode !== 0) throw new Error(`dump failed (${r.exitCode}): ${out}`);
  const frozen = Number(/Frozen time: ([\d.]+) s/.exec(out)?.[1]);
  const cpu = Number(r.resourceUsage.cpuTime.user + r.resourceUsage.cpuTime.system) / 1e6;
  return { frozen, cpu };
}

test("10,000 fds and 5,000 VMAs: dumped and restored, every fd and mapping checked by the process; dump cost linear", async () => {
  // a quarter of it first: the reference for the cost
  const small = await startWorkload("large", ["2500", "1250"], { stderr: "file", timeoutMs: 60_000 });
  const t1 = timedDump(small.pid, imagesDir("large-small"));
  await waitReaped(small.pid, 30_000);

  const w = await startWorkload("large", ["10000", "5000"], { stderr: "file", timeoutMs: 60_000 });
  const dir = imagesDir("large");
  const t4 = timedDump(w.pid, dir);
  console.log(`dump of 2,500 fds/1,250 VMAs: ${t1.cpu.toFixed(2)} s CPU, frozen ${t1.frozen} s; ` +
    `10,000 fds/5,000 VMAs: ${t4.cpu.toFixed(2)} s CPU, frozen ${t4.frozen} s`);
  // linear: 4 times the work costs about 4 times (fixed costs make it less); square would be 16
  expect(t4.cpu / t1.cpu).toBeLessThan(6);

  const r = await restore(dir, w.pid, [], 240_000);
  trigger(w);
  const res = await waitResult(w, 120_000);
  expect(res.text).toStartWith("PASS");
  expect(res.text).toContain("fds=10000\n");
  expect(res.text).toContain("vmas=5000\n");
  expect(res.text).toContain("contents=5000\n");
  expect(await r.proc.exited).toBe(0);
}, 600_000);

test("the large workload's checks fail when an fd, an offset or a mapping is damaged", async () => {
  for (const what of ["fd", "offset", "vma"]) {
    const w = await startWorkload("large", ["1000", "500", `--selftest-corrupt=${what}`], { stderr: "file", timeoutMs: 30_000 });
    trigger(w);
    const res = await waitResult(w, 30_000);
    expect(`${what}: ${res.text}`).toStartWith(`${what}: FAIL`);
  }
}, 120_000);
