// inotify, epoll, pipe and FIFO states that were restored wrong (test/workloads/notifyfix.c MODE,
// rows in test/EXACT-OR-REFUSED.md): each restored exactly (the workload checks itself after dump,
// kill and restore), or refused at dump with the target running on; CRIU 4.2 as a peer where it
// can take the state; and a damaged copy (--selftest-corrupt) fails each mode's checks.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  criuBun,
  isAlive,
  runWorkload,
  startWorkload,
  trigger,
  waitResult,
  waitUntil,
} from "./harness";
import { cleanupImages, dump, imagesDir, restore, waitReaped, peer, havePeer } from "./engine-helpers";
import { UNSUPPORTED } from "../src/resources/unsupported";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
const started: number[] = [];
afterAll(() => {
  for (const p of started)
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  cleanup();
  cleanupImages();
});

const EXACT: [string, string][] = [
  ["inomany", "29 inotify watches, wd 1-30 with a gap at 12 (fdinfo prints wd in hex): each file's event on its wd"],
  ["dontfollow", "an inotify watch on a symlink itself (IN_DONT_FOLLOW) beside a watch on its target directory"],
  ["pipedirect", "pipes in packet mode (O_DIRECT), empty and holding bytes written in normal mode"],
  ["fifodirect", "a FIFO switched to packet mode with F_SETFL O_DIRECT, holding bytes written in normal mode"],
  ["oneshot", "EPOLLONESHOT targets armed (not fired yet; fired and re-armed with EPOLL_CTL_MOD)"],
];

describe("restored exactly (the workload checks itself after restore)", () => {
  for (const [mode, what] of EXACT) {
    test(`${mode}: ${what}`, async () => {
      const w = await startWorkload("notifyfix", [mode], { stderr: "file" });
      const dir = imagesDir(`notifypipes-${mode}`);
      dump(w.pid, dir);
      const r = await restore(dir, w.pid);
      trigger(w);
      const res = await waitResult(w, 15_000);
      expect(res.text).toStartWith("PASS");
      expect(await r.proc.exited).toBe(0);
      const log = readFileSync(join(dir, "restore.log"), "utf8");
      // what the restore did, at -v4
      if (mode === "dontfollow")
        expect(log).toMatch(/inotify watch 2 is on the symlink '[^']*\/l' itself: added with IN_DONT_FOLLOW/);
      if (mode === "inomany") expect(log).toMatch(/inotify watch 30 on '[^']*\/f29' mask 2/);
      if (mode === "fifodirect") expect(log).toMatch(/fifo '[^']*\/pf' end in packet mode: O_DIRECT set with F_SETFL/);
    }, 60_000);
  }
});

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

// the pipe-packets entry's own test (refusals.test.ts) holds a pipe; the same refusal for a FIFO
test("fifopkt: packets queued in a FIFO in packet mode are refused too (pipe-packets), the FIFO intact", async () => {
  const w = await startWorkload("notifyfix", ["fifopkt"], { stderr: "file" });
  const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("notifypipes-fifopkt")]);
  expect(r.code).toBe(1);
  expect(r.stderr.trim()).toMatch(
    new RegExp(
      `^Error \\(files\\): process ${w.pid} fd \\d+: ${esc(UNSUPPORTED["pipe-packets"])} \\(FIFO '[^']*/pf', 9 bytes queued\\) is not supported yet$`
    )
  );
  expect(isAlive(w.pid)).toBe(true);
  trigger(w);
  expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
});

test("each mode reports FAIL when its state is undone (--selftest-corrupt)", async () => {
  for (const mode of [...EXACT.map(([m]) => m), "inoqueue", "oneshotfired", "pipepkt", "fifopkt"]) {
    const bad = await runWorkload("notifyfix", [mode, "--selftest-corrupt"]);
    expect(`${mode}: ${bad.summary}`).toStartWith(`${mode}: FAIL`);
  }
}, 60_000);

// ---- CRIU 4.2 as a peer ----

describe.skipIf(!havePeer)("interop with CRIU 4.2", () => {
  // CRIU 4.2 itself refuses a packet-mode pipe, and cannot open a FIFO with O_DIRECT: not here
  for (const mode of ["inomany", "oneshot", "pipedirect"]) {
    test(`interop: criu-bun dumps ${mode}, CRIU 4.2 restores it`, async () => {
      const w = await startWorkload("notifyfix", [mode], { timeoutMs: 30_000 });
      const dir = imagesDir(`notifypipes-bun-criu-${mode}`);
      dump(w.pid, dir);
      await waitReaped(w.pid, 10_000);
      try {
        peer(["restore", "-d"], dir, "restore.log");
        started.push(w.pid);
        await waitUntil(`restored ${w.pid}`, () => existsSync(`/proc/${w.pid}`));
        trigger(w);
        expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
      } finally {
        try {
          process.kill(w.pid, "SIGKILL");
        } catch {}
      }
    }, 60_000);
  }
  for (const mode of ["inomany", "oneshot", "fifodirect"]) {
    test(`interop: CRIU 4.2 dumps ${mode}, criu-bun restores it`, async () => {
      const w = await startWorkload("notifyfix", [mode], { timeoutMs: 30_000 });
      const dir = imagesDir(`notifypipes-criu-bun-${mode}`);
      peer(["dump", "-t", String(w.pid)], dir, "dump.log");
      const r = await restore(dir, w.pid, [], 20_000);
      trigger(w);
      expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
      expect(await r.proc.exited).toBe(0);
    }, 60_000);
  }
});
