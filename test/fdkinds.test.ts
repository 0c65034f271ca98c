// More kinds of file descriptors on real processes: each workload holds fds with state in
// flight (counters, armed timers, epoll sets, queued data ...), is dumped, killed, restored,
// and verifies itself.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, isAlive, runWorkload, criuBun } from "./harness";
import { dump, imagesDir, cleanupImages, dumpRestoreVerify } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const kinds: { name: string; what: string; corrupt: string; fail: string }[] = [
  { name: "eventfd", what: "counters, semaphore mode, dup", corrupt: "count", fail: "plain counter" },
  {
    name: "timerfd",
    what: "periodic, unread ticks, one-shot, disarmed, clocks",
    corrupt: "ticks",
    fail: "B unread ticks",
  },
  { name: "signalfd", what: "masks, flags, queued signal", corrupt: "mask", fail: "SIGUSR1 not read" },
  { name: "epoll", what: "interest list with ready events, nested epoll", corrupt: "del", fail: "epoll_wait gave" },
  { name: "inotify", what: "watches by path, wd numbers with a gap, flags", corrupt: "rm", fail: "no IN_CREATE" },
  {
    name: "memfd",
    what: "contents with a hole, seals, two descriptions, offsets, unsealable",
    corrupt: "seal",
    fail: "seals",
  },
  {
    name: "unix",
    what: "socketpairs of 3 types with queues both ways, shutdown, path and abstract listeners",
    corrupt: "queue",
    fail: "seqpacket b->a #1",
  },
];

describe("workloads verify themselves without a dump", () => {
  for (const k of kinds) {
    test(`${k.name} passes, and fails when damaged`, async () => {
      const ok = await runWorkload(k.name, []);
      expect(ok.text).toStartWith("PASS");
      const bad = await runWorkload(k.name, [`--selftest-corrupt=${k.corrupt}`]);
      expect(bad.summary).toStartWith("FAIL");
      expect(bad.text).toContain(k.fail);
    });
  }
});

describe("dump, kill, restore", () => {
  for (const k of kinds) {
    test(`${k.name}: ${k.what}`, async () => {
      await dumpRestoreVerify(k.name);
    });
  }
});

describe("kinds criu-bun cannot dump", () => {
  test("netlink socket: dump fails with one line naming process, fd and kind; the workload keeps running", async () => {
    const w = await startWorkload("netlink");
    const dir = imagesDir("netlink");
    const r = criuBun(["dump", "-t", String(w.pid), "-D", dir]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split("\n");
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^Error \\(files\\): process ${w.pid} fd 3: netlink socket \\(socket:\\[\\d+\\]\\) is not supported yet$`
      )
    );
    expect(isAlive(w.pid)).toBe(true);
    trigger(w);
    const res = await waitResult(w, 10000);
    expect(res.text).toStartWith("PASS");
  });
});

describe("images decode with CRIU's crit", () => {
  test.skipIf(!Bun.which("crit"))(
    "fd images of epoll, inotify, memfd, unix, timerfd dumps",
    async () => {
      for (const name of ["epoll", "inotify", "memfd", "unix", "timerfd"]) {
        const w = await startWorkload(name);
        const dir = imagesDir(`crit-${name}`);
        dump(w.pid, dir, ["--leave-running"]);
        for (const f of require("node:fs").readdirSync(dir) as string[]) {
          if (!/^(files|fdinfo-\d+|memfd|sk-queues|pagemap-shmem-\d+)\.img$/.test(f)) continue;
          const p = Bun.spawnSync(["crit", "decode", "-i", `${dir}/${f}`], { stdout: "pipe", stderr: "pipe" });
          if (p.exitCode !== 0) throw new Error(`crit decode ${name}/${f} failed: ${p.stderr}`);
        }
        trigger(w);
        expect((await waitResult(w, 10000)).text).toStartWith("PASS");
      }
    },
    60_000
  );
});
