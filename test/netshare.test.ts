// Inet socket states and resources shared between tasks that criu-bun once restored wrong, found
// from the outside in session 28 (test/workloads/netfix.c MODE): options no image field holds
// (SO_TIMESTAMP, IP_TRANSPARENT, TCP_USER_TIMEOUT, IP_TOS of an IPv6 socket ...: they came back as a
// new socket's), datagrams queued on UDP and ping sockets and the bytes a reset TCP socket still
// holds (they came back empty), multicast memberships (they came back without): all refused at dump
// now, the target left as it was. And the shared states that were right already, kept so: an fd
// table shared by CLONE_FILES, cwd and umask shared by CLONE_FS, one open file description across
// fork (flags and offset), O_NOATIME at fd 1000, a socket's owner and signal, also with CRIU 4.2
// both ways where its images hold them; and SO_REUSEPORT groups, which could not be restored (the
// option was set after bind: the second socket's bind failed), and a bound TCP socket's write
// shutdown (lost: only the read side was kept). The sockets live in a network namespace of the test's own.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import {
  buildWorkloads,
  cleanup,
  runWorkload,
  startWorkload,
  trigger,
  waitResult,
  waitUntil,
  isAlive,
} from "./harness";
import { cleanupImages, dump, imagesDir, restore, waitReaped, peer, havePeer } from "./engine-helpers";
import { UNSUPPORTED, type UnsupportedKey } from "../src/resources/unsupported";
import { Netns, criuIn, inNs, runOk } from "./netns";

const nets = new Netns("cbt-netshare");
let ns = "";
beforeAll(async () => {
  await buildWorkloads();
  ns = nets.make("a");
  runOk(inNs(ns, ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]));
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
  nets.cleanup();
});

/** the children of a workload (they must be gone before a restore takes their PIDs back) */
const childrenOf = (pid: number) =>
  readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
async function allGone(pids: number[]) {
  for (const p of pids) await waitReaped(p, 10_000);
}

/** [mode, its arguments with CRIU 4.2, what it checks, whether CRIU 4.2's dump keeps it] */
const EXACT: [string[], string[], string, boolean][] = [
  [
    ["shared"],
    ["shared", "nofs"],
    "fd table, fs, one open file description, a socket's owner: each change a child makes at go is seen by the parent (with CRIU 4.2: no CLONE_FS child, which CRIU 4.2 refuses at dump)",
    true,
  ],
  [
    ["reuseport"],
    ["reuseport"],
    "two TCP listeners and two UDP sockets sharing a port each with SO_REUSEPORT (the second bind failed): new connections and datagrams spread over both",
    true,
  ],
  [
    ["shutwr"],
    ["shutwr"],
    "a bound TCP socket shut down for writing before it connected (the shutdown was lost): after a connect at go send() says EPIPE (CRIU 4.2's dump loses it)",
    false,
  ],
];

describe.each(EXACT)("%p", (args, peerArgs, what, peerDumps) => {
  test(`criu-bun dumps and restores: ${what}`, async () => {
    const w = await startWorkload("netfix", args, { stderr: "file" });
    const kids = childrenOf(w.pid);
    const dir = imagesDir(`netshare-${args[0]}`);
    dump(w.pid, dir);
    await allGone(kids);
    const r = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  }, 60_000);

  describe.skipIf(!havePeer)("with CRIU 4.2", () => {
    test.skipIf(!peerDumps)(
      "CRIU 4.2 dumps, criu-bun restores",
      async () => {
        const w = await startWorkload("netfix", peerArgs, { stderr: "file" });
        const kids = childrenOf(w.pid);
        const dir = imagesDir(`netshare-peer-dump-${args[0]}`);
        peer(["dump", "-t", String(w.pid)], dir, "dump.log");
        await waitReaped(w.pid, 10_000);
        await allGone(kids);
        const r = await restore(dir, w.pid);
        trigger(w);
        expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
        expect(await r.proc.exited).toBe(0);
      },
      60_000
    );
    test("criu-bun dumps, CRIU 4.2 restores", async () => {
      const w = await startWorkload("netfix", peerArgs, { stderr: "file" });
      const kids = childrenOf(w.pid);
      const dir = imagesDir(`netshare-peer-restore-${args[0]}`);
      dump(w.pid, dir);
      await waitReaped(w.pid, 10_000);
      await allGone(kids);
      try {
        peer(["restore", "-d"], dir, "restore.log");
        await waitUntil(`restored ${w.pid}`, () => existsSync(`/proc/${w.pid}`));
        trigger(w);
        expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
      } finally {
        for (const p of [w.pid, ...kids])
          try {
            process.kill(p, "SIGKILL");
          } catch {}
      }
    }, 60_000);
  });
});

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const REFUSED: [string[], UnsupportedKey, RegExp][] = [
  [["opt", "timestamp"], "sockopt", /SO_TIMESTAMP 1 on UDP 127\.0\.0\.1:\d+/],
  [["opt", "transparent"], "sockopt", /IP_TRANSPARENT 1 on TCP 127\.0\.0\.1:\d+/],
  [["opt", "recverr"], "sockopt", /IP_RECVERR 1 on UDP/],
  [["opt", "mcttl"], "sockopt", /IP_MULTICAST_TTL 7 on UDP/],
  [["opt", "v6tos"], "sockopt", /IP_TOS 32 on UDP \[::1\]:\d+/],
  [["opt", "v6recverr"], "sockopt", /IPV6_RECVERR 1 on UDP \[::1\]/],
  [["opt", "usertimeout"], "sockopt", /TCP_USER_TIMEOUT 12345 on TCP/],
  [["opt", "maxseg"], "sockopt", /TCP_MAXSEG 1000 on TCP/],
  [["opt", "congestion"], "sockopt", /TCP_CONGESTION "reno" on TCP/],
  [["opt", "udpgro"], "sockopt", /UDP_GRO 1 on UDP/],
  [["udpqueue"], "inet-queue", /datagrams on UDP 127\.0\.0\.1:\d+/],
  [["udpshutq"], "inet-queue", /datagrams on UDP 127\.0\.0\.1:\d+/],
  [["pingqueue"], "inet-queue", /datagrams on ping/],
  [["rstdata"], "inet-queue", /5 bytes on TCP 127\.0\.0\.1:\d+/],
  [["mcast"], "inet-multicast", /239\.1\.2\.3 on interface 1, UDP/],
  [["mcast6"], "inet-multicast", /\[ff05::1:3\] on interface 1, UDP/],
];

describe("refused at dump in one line; the target runs on as it was", () => {
  for (const [args, key, detail] of REFUSED) {
    test(`${args.join(" ")}: ${UNSUPPORTED[key]}`, async () => {
      const w = await startWorkload("netfix", args, { stderr: "file", wrap: ["nsenter", `--net=/run/netns/${ns}`] });
      const r = criuIn(ns, ["dump", "-t", String(w.pid), "-D", imagesDir(`netshare-${args.join("-")}`)]);
      expect(r.code).toBe(1);
      const line = r.stderr.trim();
      expect(line.split("\n").length).toBe(1);
      expect(line).toMatch(
        new RegExp(
          `^Error \\(\\w+\\): process ${w.pid} fd \\d+: ${esc(UNSUPPORTED[key])} \\(.*\\) is not supported yet$`
        )
      );
      expect(line).toMatch(detail);
      expect(isAlive(w.pid)).toBe(true);
      expect(readFileSync(`/proc/${w.pid}/status`, "utf8")).toMatch(/TracerPid:\s*0\n/);
      trigger(w);
      expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
    }, 30_000);
  }
});

test("the netfix checks fail when the state is undone (--selftest-corrupt)", async () => {
  for (const args of [...EXACT.map(([a]) => a), ...REFUSED.map(([a]) => a)]) {
    const bad = await runWorkload("netfix", [...args, "--selftest-corrupt"], {
      wrap: ["nsenter", `--net=/run/netns/${ns}`],
    });
    expect(`${args.join(" ")}: ${bad.summary}`).toStartWith(`${args.join(" ")}: FAIL`);
  }
}, 120_000);
