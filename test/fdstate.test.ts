// Exact restores of states criu-bun once got wrong (workload test/workloads/fdstate.c MODE), each on
// real processes that check themselves after the restore:
//  - POSIX message queues holding zero-length messages (the dump crashed and emptied the running
//    target's queue); a failed dump leaves every message in place;
//  - timerfd settime flags (TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET) kept, with CRIU 4.2 as the
//    other tool both ways;
//  - OFD locks written as CRIU writes them (file_lock_entry.flag FL_OFD = 4) and read back from
//    CRIU's images, both ways.
// (A full queue, which a blocked sender outside the tree makes unreadable, is refused:
// refusals.test.ts "mqueue-full".)
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { writeManifest } from "../src/images/manifest";
import { join } from "node:path";
import { buildWorkloads, cleanup, startWorkload, isAlive, criuBun } from "./harness";
import {
  dump,
  imagesDir,
  cleanupImages,
  dumpRestoreVerify,
  expectPass,
  restoreAndCheck,
  roundTrip,
  PEER,
  havePeer,
  type Tool,
} from "./engine-helpers";

if (!havePeer) console.warn(`SKIP the CRIU 4.2 directions: ${PEER} is missing`);

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

function show(dir: string, file: string): any[] {
  const r = criuBun(["show", `${dir}/${file}`]);
  expect(r.code).toBe(0);
  const j = JSON.parse(r.stdout);
  return j.entries ?? j;
}

/** fdstate MODE dumped by one tool and restored by the other (options to both): PASS; the images directory */
async function across(dumper: Tool, restorer: Tool, mode: string, opts: string[] = []) {
  const w = await startWorkload("fdstate", [mode]);
  return roundTrip(w, { dumper, restorer, tag: `${dumper}-${mode}`, dumpArgs: opts, restoreArgs: opts });
}

describe("POSIX message queue with zero-length messages", () => {
  test("dumped and restored exactly: every message's length, priority and bytes in receive order", async () => {
    const { dir } = await dumpRestoreVerify("fdstate", ["mqzero"]);
    const lines = readFileSync(join(dir, "mqueue.criu-bun.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const a = lines.find((l) => l.k === "queue" && l.name.endsWith("-a"));
    expect(a.msgs.map((m: any) => [m.prio, Buffer.from(m.data, "base64").length])).toEqual([
      [10, 0],
      [5, 2],
      [5, 2],
      [5, 0],
      [5, 2],
      [3, 64],
      [0, 0],
    ]);
    const b = lines.find((l) => l.k === "queue" && l.name.endsWith("-b"));
    expect(b.msgs).toEqual([{ prio: 0, data: "" }]);
    const log = readFileSync(join(dir, "dump.log"), "utf8");
    expect(log).toMatch(
      /mqueue: process \d+ fd \d+: '\/fdstate-\d+-a' \(maxmsg 8, msgsize 64\): 7 message\(s\), 70 bytes/
    );
  }, 60_000);

  test("a dump that fails after reading the queues, and one with --leave-running, leave every message in place", async () => {
    const w = await startWorkload("fdstate", ["mqzero"]);
    const failed = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("mqzero-fault")], {
      env: { CRIU_BUN_FAULT: "dump-end" },
    });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain("injected fault 'dump-end'");
    expect(isAlive(w.pid)).toBe(true);
    dump(w.pid, imagesDir("mqzero-lr"), ["--leave-running"]);
    expect(isAlive(w.pid)).toBe(true);
    await expectPass(w, 10_000);
  }, 30_000);
});

describe("timerfd settime flags", () => {
  test("TFD_TIMER_ABSTIME and TFD_TIMER_CANCEL_ON_SET kept on every clock, armed and disarmed; time left kept", async () => {
    const { dir } = await dumpRestoreVerify("fdstate", ["tfdflags"]);
    const tfds = show(dir, "files.img").filter((e) => e.type === "TIMERFD");
    expect(tfds.map((e) => [e.tfd.clockid, Number(e.tfd.settimeFlags ?? e.tfd.settime_flags)])).toEqual([
      [0, 3],
      [1, 1],
      [7, 1],
      [0, 2],
      [0, 3],
      [1, 0],
      [0, 1],
      [1, 1],
    ]);
    expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(
      /timerfd: process \d+ fd \d+: clock 0, settime flags 03, absolute value \d+\.\d{9} s, interval 7\.000000000 s/
    );
  }, 60_000);

  test.skipIf(!havePeer)(
    "CRIU 4.2 dumps, criu-bun restores",
    async () => {
      await across("criu-4.2", "criu-bun", "tfdflags");
    },
    60_000
  );

  test.skipIf(!havePeer)(
    "criu-bun dumps, CRIU 4.2 restores",
    async () => {
      await across("criu-bun", "criu-4.2", "tfdflags");
    },
    60_000
  );
});

describe("OFD locks", () => {
  test("restored as OFD locks (an unrelated close keeps them, l_pid -1); filelocks.img says FL_OFD (4) as CRIU does", async () => {
    const { dir } = await dumpRestoreVerify("fdstate", ["ofd"], { dumpArgs: ["--file-locks"] });
    const locks = show(dir, "filelocks.img");
    expect(locks.map((l) => [l.flag, l.type, Number(l.start), Number(l.len)]).sort()).toEqual(
      [
        [4, 1, 5, 5],
        [4, 0, 0, 0],
        [1, 1, 0, 10],
      ].sort()
    );
  }, 60_000);

  test.skipIf(!Bun.which("crit"))(
    "criu-bun's older images (OFD as flag 1024) are still read as OFD locks",
    async () => {
      const w = await startWorkload("fdstate", ["ofd"]);
      const dir = imagesDir("ofd-1024");
      dump(w.pid, dir, ["--file-locks"]);
      const img = join(dir, "filelocks.img");
      const crit = (...a: string[]) => {
        const r = Bun.spawnSync(["crit", ...a], { stdout: "pipe", stderr: "pipe" });
        if (r.exitCode !== 0) throw new Error(`crit ${a.join(" ")}: ${r.stderr}`);
        return r.stdout.toString();
      };
      const j = JSON.parse(crit("decode", "-i", img));
      for (const e of j.entries) if (e.flag === 4) e.flag = 1024;
      writeFileSync(join(dir, "filelocks.json"), JSON.stringify(j));
      crit("encode", "-i", join(dir, "filelocks.json"), "-o", img);
      rmSync(join(dir, "filelocks.json"));
      writeManifest(dir); // changed on purpose: the sums catch damage, not intent
      expect(show(dir, "filelocks.img").map((l) => l.flag)).toContain(1024);
      await restoreAndCheck("criu-bun", dir, w);
    },
    60_000
  );

  test.skipIf(!havePeer)(
    "CRIU 4.2 dumps, criu-bun restores",
    async () => {
      const dir = await across("criu-4.2", "criu-bun", "ofd", ["--file-locks"]);
      expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(
        /filelocks: .*: OFD write lock taken again \(5\+5\)/
      );
    },
    60_000
  );

  test.skipIf(!havePeer)(
    "criu-bun dumps, CRIU 4.2 restores",
    async () => {
      await across("criu-bun", "criu-4.2", "ofd", ["--file-locks"]);
    },
    60_000
  );
});
