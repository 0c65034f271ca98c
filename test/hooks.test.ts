// Notification hooks (src/hooks.ts) at criu's points of dump and restore, driven in-process
// with a recording Hooks: the order, the pid each one carries, and that a refused hook stops the
// pipeline with the tree as it was (running after a refused dump, nothing left after a refused
// restore). The RPC front door's notifications are tested end to end in test/swrk.test.ts.
import { afterAll, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { startWorkload, trigger, waitResult, cleanup, isAlive, killWorkload, procState } from "./harness";
import { imagesDir, cleanupImages, waitReaped } from "./engine-helpers";
import { dumpProcess } from "../src/dump/dump";
import { restoreProcesses } from "../src/restore/restore";
import { ScriptHooks, type Hooks, type HookAction, type HookContext } from "../src/hooks";
import { CriuError } from "../src/log";

afterAll(() => {
  cleanup();
  cleanupImages();
});

class Recorder implements Hooks {
  seen: { action: HookAction; pid?: number; state?: string | null }[] = [];
  constructor(private refuse?: HookAction) {}
  run(action: HookAction, ctx: HookContext) {
    // the state of the tree while the hook runs: frozen (t) during dump hooks after pre-dump
    this.seen.push({ action, pid: ctx.pid, state: ctx.pid ? procState(ctx.pid) : undefined });
    if (action === this.refuse) throw new CriuError("test", `${action} refused`);
  }
}

test("dump and restore run their hooks in criu's order, the tree frozen while they run", async () => {
  const w = await startWorkload("counter");
  const dir = imagesDir("hooks");
  const d = new Recorder();
  dumpProcess({ pid: w.pid, dir, hooks: d });
  expect(d.seen.map((s) => s.action)).toEqual(["pre-dump", "query-ext-files", "post-dump"]);
  expect(d.seen.every((s) => s.pid === w.pid)).toBe(true);
  expect(d.seen[0].state).not.toBe("t"); // not frozen yet
  expect(d.seen[2].state).toBe("t"); // images written, tree still frozen until post-dump is answered
  await waitReaped(w.pid);
  const r = new Recorder();
  const st = restoreProcesses({ dir, hooks: r });
  expect(st.pid).toBe(w.pid);
  expect(r.seen.map((s) => s.action)).toEqual(["pre-restore", "post-restore", "pre-resume", "post-resume"]);
  expect(r.seen.slice(1).every((s) => s.pid === w.pid)).toBe(true);
  expect(r.seen[1].state).toBe("t"); // restored but not running yet
  trigger(w);
  const res = await waitResult(w, 15000);
  expect(res.text).toStartWith("PASS");
}, 60000);

test("a refused pre-dump or post-dump fails the dump and the tree keeps running", async () => {
  const w = await startWorkload("counter");
  for (const refuse of ["pre-dump", "post-dump"] as const) {
    const dir = imagesDir("hooks-refuse");
    const h = new Recorder(refuse);
    expect(() => dumpProcess({ pid: w.pid, dir, hooks: h })).toThrow(`${refuse} refused`);
    expect(h.seen.at(-1)!.action).toBe(refuse);
    expect(isAlive(w.pid)).toBe(true);
    expect(procState(w.pid)).not.toBe("t");
  }
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS");
}, 60000);

test("a refused pre-resume fails the restore and leaves no process behind", async () => {
  const w = await startWorkload("counter");
  const dir = imagesDir("hooks-rst");
  dumpProcess({ pid: w.pid, dir });
  await waitReaped(w.pid);
  const h = new Recorder("pre-resume");
  expect(() => restoreProcesses({ dir, hooks: h })).toThrow("pre-resume refused");
  await waitReaped(w.pid);
  expect(existsSync(`/proc/${w.pid}`)).toBe(false);
  killWorkload(w);
}, 60000);

test("action scripts see CRTOOLS_SCRIPT_ACTION, CRTOOLS_IMAGE_DIR and CRTOOLS_INIT_PID; a failing one stops the dump", async () => {
  const w = await startWorkload("counter");
  const dir = imagesDir("hooks-script");
  const out = join(dir, "actions.txt");
  const script = join(dir, "act.sh");
  writeFileSync(
    script,
    `#!/bin/sh\necho "$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID $CRTOOLS_IMAGE_DIR" >> ${out}\n[ "$CRTOOLS_SCRIPT_ACTION" != "$FAIL_AT" ]\n`
  );
  chmodSync(script, 0o700);
  process.env.FAIL_AT = "post-dump";
  try {
    expect(() => dumpProcess({ pid: w.pid, dir, leaveRunning: true, hooks: new ScriptHooks([script], dir) })).toThrow(
      "failed at post-dump (exit 1)"
    );
  } finally {
    delete process.env.FAIL_AT;
  }
  expect(readFileSync(out, "utf8")).toBe(`pre-dump ${w.pid} ${dir}\npost-dump ${w.pid} ${dir}\n`);
  expect(procState(w.pid)).not.toBe("t");
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS");
}, 60000);
