// inotify, epoll, pipe and FIFO states that were restored wrong (test/workloads/notifyfix.c MODE,
// rows in test/EXACT-OR-REFUSED.md): each restored exactly (the workload checks itself after dump,
// kill and restore), or refused at dump with the target running on; CRIU 4.2 as a peer where it
// can take the state; and a damaged copy (--selftest-corrupt) fails each mode's checks.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, criuBun, isAlive, runWorkload, startWorkload } from "./harness";
import { cleanupImages, expectPass, imagesDir, havePeer, roundTrip, type Tool } from "./engine-helpers";
import { UNSUPPORTED } from "../src/resources/unsupported";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
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
      const dir = await roundTrip(w, { dumper: "criu-bun", restorer: "criu-bun", tag: `notifypipes-${mode}` });
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
  await expectPass(w, 10_000);
});

test("each mode reports FAIL when its state is undone (--selftest-corrupt)", async () => {
  for (const mode of [...EXACT.map(([m]) => m), "inoqueue", "oneshotfired", "pipepkt", "fifopkt"]) {
    const bad = await runWorkload("notifyfix", [mode, "--selftest-corrupt"]);
    expect(`${mode}: ${bad.summary}`).toStartWith(`${mode}: FAIL`);
  }
}, 60_000);

// ---- CRIU 4.2 as a peer ----

const said = (t: Tool) => (t === "criu-bun" ? t : "CRIU 4.2");

describe.skipIf(!havePeer)("interop with CRIU 4.2", () => {
  // CRIU 4.2 itself refuses a packet-mode pipe, and cannot open a FIFO with O_DIRECT: not here
  for (const [dumper, restorer, modes] of [
    ["criu-bun", "criu-4.2", ["inomany", "oneshot", "pipedirect"]],
    ["criu-4.2", "criu-bun", ["inomany", "oneshot", "fifodirect"]],
  ] as const) {
    for (const mode of modes) {
      test(`interop: ${said(dumper)} dumps ${mode}, ${said(restorer)} restores it`, async () => {
        const w = await startWorkload("notifyfix", [mode], { timeoutMs: 30_000 });
        await roundTrip(w, { dumper, restorer, tag: `notifypipes-${dumper}-${mode}` });
      }, 60_000);
    }
  }
});
