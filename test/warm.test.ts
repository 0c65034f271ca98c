// The heap pages a dump and a restore touch, populated ahead (src/sys/warm.ts): the executable the
// build made has the table in it, a dump says so at -v4, the thread that populates is gone by the
// time the restored process runs, the table fits (the faults it saves are counted by perf, the
// kernel's own count of page-fault exceptions), and nothing in a bad table fails a command.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  criuBunCommand,
  REPO_ROOT,
  startWorkload,
  trigger,
  waitResult,
  waitUntil,
} from "./harness";
import { cleanupImages, dump, imagesDir, killAndWait, restore, waitReaped } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const compiled = () => criuBunCommand()[0] === join(REPO_ROOT, "criu-bun");
/** The table is the build's: these tests need ./criu-bun built from the sources as they are. */
function needBuilt() {
  if (!compiled()) throw new Error("./criu-bun is missing or older than src/: run `npm run build` (npm test does)");
}

/** A sleep of its own session, stdio on /dev/null; killed by the caller. */
function sleeper() {
  return Bun.spawn(["setsid", "sleep", "1000"], { stdio: ["ignore", "ignore", "ignore"] });
}

/** page-fault exceptions of one run (perf stat's software event), or undefined without perf */
function faults(args: string[], env: Record<string, string>): number | undefined {
  const r = Bun.spawnSync(["perf", "stat", "-x,", "-e", "page-faults", ...criuBunCommand(), ...args], {
    env: { ...process.env, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  if (r.exitCode !== 0) return undefined;
  const line = r.stderr
    .toString()
    .split("\n")
    .find((l) => l.includes(",page-faults"));
  return line ? Number(line.split(",")[0]) : undefined;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

test("a dump populates the heap pages ahead, on a thread, and says so at -v4", () => {
  needBuilt();
  const s = sleeper();
  try {
    const dir = imagesDir("warm-log");
    dump(s.pid, dir, ["-R"]);
    const log = readFileSync(join(dir, "dump.log"), "utf8");
    const m = /start: (\d+) pages of the heap arena populated ahead for 'dump' by thread (\d+) \((\d+) runs/.exec(log);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(500);
    expect(Number(m![3])).toBeGreaterThan(10);
  } finally {
    s.kill("SIGKILL");
  }
});

test("the populating thread is gone while the restore still runs", async () => {
  needBuilt();
  const w = await startWorkload("spin");
  const dir = imagesDir("warm-thread");
  dump(w.pid, dir);
  await killAndWait(w);
  await waitReaped(w.pid);
  const r = await restore(dir, w.pid); // attached: criu-bun waits for the restored tree
  const log = readFileSync(join(dir, "restore.log"), "utf8");
  const m = /start: \d+ pages of the heap arena populated ahead for 'restore' by thread (\d+)/.exec(log);
  expect(m).not.toBeNull();
  const task = `/proc/${r.proc.pid}/task/${m![1]}`;
  await waitUntil(`${task} gone`, () => !existsSync(task), 5000);
  expect(existsSync(`/proc/${r.proc.pid}`)).toBe(true); // criu-bun itself still there
  trigger(w);
  const res = await waitResult(w, 15000);
  expect(res.text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0);
});

test("the compiled-in table fits: a sleep dump takes at least 20% fewer page faults with it", () => {
  needBuilt();
  const probe = Bun.spawnSync(["perf", "stat", "-x,", "-e", "page-faults", "true"], { stderr: "pipe" });
  if (probe.exitCode !== 0) {
    console.log("skipped: perf stat cannot count page faults here");
    return;
  }
  const s = sleeper();
  try {
    const dir = imagesDir("warm-faults");
    const args = ["dump", "-t", String(s.pid), "-D", dir, "-R"];
    const off: number[] = [],
      on: number[] = [];
    for (let i = 0; i < 3; i++) {
      off.push(faults(args, { CRIU_BUN_WARM: "0" })!);
      on.push(faults(args, { CRIU_BUN_WARM: "sync" })!);
    }
    console.log(`sleep dump page faults: without the table ${off.join(" ")}, with it ${on.join(" ")}`);
    expect(off.every(Number.isFinite) && on.every(Number.isFinite)).toBe(true);
    expect(median(on)).toBeLessThan(median(off) * 0.8);
  } finally {
    s.kill("SIGKILL");
  }
});

test("a bad table never fails a command; the recording is written 0600", () => {
  const s = sleeper();
  try {
    const dir = imagesDir("warm-bad");
    const rec = join(dir, "warm.rec");
    for (const table of [
      "not json",
      '{"dump":"x"}',
      '{"dump":[-1,5,3,2]}',
      '{"dump":[0,999999999]}',
      '{"dump":[1.5,2]}',
      '{"dump":[0,1,2]}',
    ]) {
      const r = Bun.spawnSync([...criuBunCommand(), "dump", "-t", String(s.pid), "-D", dir, "-R"], {
        env: { ...process.env, CRIU_BUN_WARM_RECORD: rec, CRIU_BUN_WARM_TABLE: table },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      expect({ table, code: r.exitCode, stderr: r.stderr.toString() }).toEqual({ table, code: 0, stderr: "" });
    }
    if (compiled()) {
      // the last one recorded: page runs, one a line, the file only for its owner
      expect(statSync(rec).mode & 0o777).toBe(0o600);
      const lines = readFileSync(rec, "latin1").trim().split("\n");
      expect(lines.length).toBeGreaterThan(100);
      for (const l of lines) expect(l).toMatch(/^\d+ 1$/);
    }
  } finally {
    s.kill("SIGKILL");
  }
});
