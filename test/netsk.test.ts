// Inet and unix sockets in every state criu-bun keeps (issue 12, sections 1-3):
// test/workloads/inetsk.c MODE sets the sockets up in a network namespace of the test's own (ping
// sockets allowed there by net.ipv4.ping_group_range), criu-bun dumps and restores it from inside
// that namespace, and the workload checks every socket itself after restore.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  startWorkload,
  trigger,
  waitResult,
  isAlive,
  runWorkload,
  type Workload,
} from "./harness";
import { imagesDir, cleanupImages, waitReaped } from "./engine-helpers";
import { readImage } from "../src/images/image";
import { criuIn, dumpIn, inNs, restoreIn } from "./netns";

const ns = `cbt-netsk-${process.pid % 100000}${Math.random().toString(36).slice(2, 6)}`; // random: runs in fresh PID namespaces share PIDs
const extPids: number[] = [];

function run(cmd: string[]) {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
}
beforeAll(async () => {
  await buildWorkloads();
  Bun.spawnSync(["ip", "netns", "del", ns], { stderr: "ignore" });
  run(["ip", "netns", "add", ns]);
  run(["ip", "-n", ns, "link", "set", "lo", "up"]);
  run(inNs(ns, ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]));
}, 120_000);
afterAll(() => {
  for (const p of extPids)
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  cleanup();
  cleanupImages();
  Bun.spawnSync(["ip", "netns", "del", ns], { stderr: "ignore" });
});

const criu = (args: string[]) => criuIn(ns, args);
const start = (mode: string) =>
  startWorkload("inetsk", [mode], { stderr: "file", wrap: ["nsenter", `--net=/run/netns/${ns}`] });

async function dumpRestore(w: Workload, tag: string, dumpArgs: string[] = [], restoreArgs: string[] = []) {
  const dir = imagesDir(`netsk-${tag}`);
  dumpIn(ns, w.pid, dir, dumpArgs);
  await restoreIn(ns, dir, w.pid, restoreArgs);
  return dir;
}
async function checkPass(w: Workload) {
  trigger(w);
  const res = await waitResult(w, 20_000);
  expect(res.text).toStartWith("PASS");
  return res.text;
}
const inetEntries = (dir: string) =>
  readImage(dir, "files.img", "FILES")
    .filter((f) => f.isk)
    .map((f) => f.isk!);

describe("--tcp-close", () => {
  test("connections (established and half-closed) come back closed: recv 0, send EPIPE", async () => {
    const w = await start("tcpclose");
    const dir = await dumpRestore(w, "tcpclose", ["--tcp-close"], ["--tcp-close"]);
    const states = inetEntries(dir)
      .map((k) => k.state)
      .sort();
    expect(states).toEqual([1, 1, 5, 8]); // ESTABLISHED x2, FIN_WAIT2, CLOSE_WAIT
    await checkPass(w);
  }, 60_000);
  test("an image dumped with --tcp-close needs it on restore too", async () => {
    const w = await start("tcpclose");
    const dir = imagesDir("netsk-tcpclose2");
    expect(criu(["dump", "-t", String(w.pid), "-D", dir, "--tcp-close"]).code).toBe(0);
    await waitReaped(w.pid);
    const r = criu(["restore", "-D", dir, "-d"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("tcp-close");
    expect(isAlive(w.pid)).toBe(false);
  }, 60_000);
});

describe("inet sockets restored exactly (the workload checks itself)", () => {
  for (const opt of [[], ["--tcp-established"]])
    test(`reset: a connection reset by its peer stays closed (recv 0, send EPIPE), name kept${opt.length ? ", also with --tcp-established" : ""}`, async () => {
      const w = await start("reset");
      const dir = await dumpRestore(w, `reset${opt.length}`, opt, opt);
      expect(inetEntries(dir)[0].shutdown).toBe(1); // read side, as CRIU reads it (poll)
      await checkPass(w);
    }, 60_000);

  test("states: unbound/bound TCP v4, v6, v4-mapped, UDP, UDP-Lite, ping v4/v6, raw (IPPROTO_RAW, ICMP, ICMPv6)", async () => {
    const w = await start("states");
    const dir = await dumpRestore(w, "states");
    const k = inetEntries(dir);
    const kinds = k.map((e) => `${e.family}/${e.type}/${e.proto}`).sort();
    expect(kinds).toEqual(
      [
        "10/1/6",
        "10/1/6",
        "10/2/17",
        "10/2/17",
        "10/2/58",
        "10/3/58",
        "2/1/6",
        "2/1/6",
        "2/1/6",
        "2/2/1",
        "2/2/136",
        "2/2/17",
        "2/3/1",
        "2/3/255",
      ].sort()
    );
    // raw options in CRIU's fields: IP_HDRINCL and the ICMP filter
    const rawIcmp = k.find((e) => e.type === 3 && e.proto === 1)!;
    expect(rawIcmp.ipOpts?.raw?.hdrincl).toBe(true);
    expect(rawIcmp.ipOpts?.raw?.icmpvFilter).toEqual([~1 >>> 0]);
    expect(k.find((e) => e.type === 3 && e.proto === 58)!.ipOpts?.raw?.icmpvFilter?.length).toBe(8);
    await checkPass(w);
  }, 60_000);

  test("opts: every socket option CRIU keeps, non-default, on TCP, UDP, UDPv6 and a listener", async () => {
    const w = await start("opts");
    const dir = await dumpRestore(w, "opts");
    const k = inetEntries(dir);
    const t = k.find((e) => e.proto === 6 && e.state === 7)!;
    if (!t.opts) throw new Error("no sk_opts");
    // CRIU 4.2's fields carry them (crit reads these names)
    expect(t.opts.soPriority).toBe(5);
    expect(t.opts.soMark).toBe(0x42);
    expect(t.opts.soBoundDev).toBe("lo");
    expect(t.opts.soFilter?.length).toBe(4);
    expect(t.opts.soLinger).toBe(13);
    expect(t.tcpOpts).toMatchObject({ cork: true, nodelay: true, keepcnt: 3, keepidle: 77, keepintvl: 11 });
    expect(t.ipOpts).toMatchObject({ freebind: true, tos: 0x10, ttl: 33 });
    const u6 = k.find((e) => e.family === 10)!;
    expect(u6.ipOpts).toMatchObject({ freebind: true, pktinfo: true, tos: 0x20, ttl: 17 });
    await checkPass(w);
  }, 60_000);

  test("--skip-in-flight: a listener with a connection not accepted yet is dumped; it listens after restore", async () => {
    const w = await start("inflight");
    extPids.push(Number(readFileSync(join(w.dir, "ext-pid"), "utf8")));
    await dumpRestore(w, "inflight", ["--skip-in-flight"]);
    await checkPass(w);
  }, 60_000);

  test("a listener with a half-open connection (SYN_RECV, in its SYN queue, none in its accept queue) is refused without --skip-in-flight; its TCP_DEFER_ACCEPT is refused with it; the workload runs on", async () => {
    const w = await start("synrecv");
    extPids.push(Number(readFileSync(join(w.dir, "ext-pid"), "utf8")));
    const errLine = (r: { stderr: string }) =>
      r.stderr
        .trim()
        .split("\n")
        .filter((l) => !l.startsWith("Warn: "));
    const a = criu(["dump", "-t", String(w.pid), "-D", imagesDir("netsk-synrecv")]);
    expect(a.code).toBe(1);
    expect(errLine(a)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^Error \\(files\\): process ${w.pid} fd \\d+: TCP connection not accepted yet \\(--skip-in-flight drops it\\) \\(1 half-open \\(SYN_RECV\\) on 127\\.0\\.0\\.1:\\d+\\) is not supported yet$`
        )
      ),
    ]);
    const b = criu(["dump", "-t", String(w.pid), "-D", imagesDir("netsk-synrecv2"), "--skip-in-flight"]);
    expect(b.code).toBe(1);
    expect(errLine(b)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^Error \\(files\\): process ${w.pid} fd \\d+: socket option criu-bun does not keep \\(TCP_DEFER_ACCEPT\\) is not supported yet$`
        )
      ),
    ]);
    expect(isAlive(w.pid)).toBe(true);
    await checkPass(w);
  }, 60_000);

  // halfest (FIN_WAIT2 met first, CLOSE_WAIT beside it) is refusals.test's tcp-half-closed
  // entry; closewait puts the CLOSE_WAIT end first; the others are states a loopback connection
  // only holds with its FIN stuck behind a closed window (closing: both ends' FINs stuck, one end
  // then reads its peer's FIN, a simultaneous close)
  for (const [mode, state] of [
    ["closewait", "CLOSE_WAIT"],
    ["finwait1", "FIN_WAIT1"],
    ["lastack", "LAST_ACK"],
    ["closing", "CLOSING"],
    ["synsent", "SYN_SENT"],
  ] as const) {
    test(`${mode}: a connection in ${state} is refused with --tcp-established in one line naming it; the workload runs on with its states`, async () => {
      const w = await start(mode);
      const ext = join(w.dir, "ext-pid");
      if (existsSync(ext)) extPids.push(Number(readFileSync(ext, "utf8")));
      const r = criu(["dump", "-t", String(w.pid), "-D", imagesDir(`netsk-${mode}`), "--tcp-established"]);
      expect(r.code).toBe(1);
      expect(
        r.stderr
          .trim()
          .split("\n")
          .filter((l) => !l.startsWith("Warn: "))
      ).toEqual([
        expect.stringMatching(
          new RegExp(
            `^Error \\(files\\): process ${w.pid} fd \\d+: half-closed or connecting TCP connection with --tcp-established \\(${state} 127\\.0\\.0\\.1:\\d+( <-> 127\\.0\\.0\\.1:\\d+)?\\) is not supported yet$`
          )
        ),
      ]);
      expect(isAlive(w.pid)).toBe(true);
      await checkPass(w);
    }, 60_000);
  }
  test("the workload's checks fail on a wrong restore (new, unconfigured sockets)", async () => {
    for (const mode of ["tcpclose", "states", "opts", "reset", "closing"]) {
      const bad = await runWorkload("inetsk", [mode, "--selftest-corrupt"], {
        resultTimeoutMs: 15_000,
        wrap: ["nsenter", `--net=/run/netns/${ns}`],
      });
      expect(`${mode}: ${bad.summary}`).toStartWith(`${mode}: FAIL`);
    }
  }, 60_000);
});

// The refusals (inflight without --skip-in-flight, halfest with --tcp-established, sockerr,
// rawconn, mptcp, lockfilter) run in test/refusals.test.ts with every other entry of the list.

// Unix sockets (workloads/unixsk.c), in the test's own network namespace like the rest (abstract
// names live there), dumped and restored from inside it.
describe("unix sockets restored exactly (the workload checks itself)", () => {
  const startU = (mode: string) =>
    startWorkload("unixsk", [mode], { stderr: "file", wrap: ["nsenter", `--net=/run/netns/${ns}`] });
  test("dgram: clients connected one way (unnamed, abstract, in a child), abstract server, self-connected with a queued datagram, relative name, path mode and owner", async () => {
    const w = await startU("dgram");
    const dir = await dumpRestore(w, "unix-dgram");
    const u = readImage(dir, "files.img", "FILES")
      .filter((f) => f.usk)
      .map((f) => f.usk!);
    const srv = u.find((e) => new TextDecoder().decode(e.name).endsWith("/srv.sock\0"))!;
    expect(srv.filePerms).toMatchObject({ mode: 0o640, uid: 4321, gid: 8765 });
    expect(u.filter((e) => e.peer === srv.ino).length).toBe(3);
    const rel = u.find((e) => new TextDecoder().decode(e.name).startsWith("rel.sock"))!;
    expect(rel.nameDir).toBe(w.dir);
    await checkPass(w);
  }, 60_000);
  test("deleted: unlinked name (with a client), removed directory (listener), a FIFO now at the path: names kept, no file made, FIFO untouched", async () => {
    const w = await startU("deleted");
    const dir = await dumpRestore(w, "unix-deleted");
    const u = readImage(dir, "files.img", "FILES")
      .filter((f) => f.usk)
      .map((f) => f.usk!);
    expect(u.filter((e) => e.deleted).length).toBe(3);
    await checkPass(w);
  }, 60_000);
  test("accepted: connections keep their names (getsockname of the accepted end, getpeername of the client: the listener's path or abstract name), a client's own name, a closed peer's data, a closed listener's name free again, a named datagram pair", async () => {
    const w = await startU("accepted");
    const dir = await dumpRestore(w, "unix-accepted");
    // the accepted ends carry their listener's name in the image, as CRIU writes it
    const u = readImage(dir, "files.img", "FILES")
      .filter((f) => f.usk)
      .map((f) => f.usk!);
    const accSock = u.filter((e) => new TextDecoder().decode(e.name).endsWith("/acc.sock\0"));
    expect(accSock.filter((e) => e.state === 10).length).toBe(1);
    expect(accSock.filter((e) => e.state === 1).length).toBe(3);
    await checkPass(w);
  }, 60_000);
  test("accext: an accepted connection whose abstract name a listener outside the tree holds is refused in one line naming it; the workload runs on", async () => {
    const w = await startU("accext");
    extPids.push(Number(readFileSync(join(w.dir, "ext-pid"), "utf8")));
    const r = criu(["dump", "-t", String(w.pid), "-D", imagesDir("netsk-accext")]);
    expect(r.code).toBe(1);
    expect(
      r.stderr
        .trim()
        .split("\n")
        .filter((l) => !l.startsWith("Warn: "))
    ).toEqual([
      expect.stringMatching(
        new RegExp(
          `^Error \\(files\\): process ${w.pid} fd \\d+: unix connection whose abstract name restore cannot give back \\('@criu-bun-${w.pid}-ext' of unix socket \\d+ is held by listener \\d+ outside the tree\\) is not supported yet$`
        )
      ),
    ]);
    expect(isAlive(w.pid)).toBe(true);
    await checkPass(w);
  }, 60_000);
  test("the unixsk checks fail on a wrong restore (new unnamed sockets)", async () => {
    for (const mode of ["dgram", "deleted", "accepted"]) {
      const bad = await runWorkload("unixsk", [mode, "--selftest-corrupt"], { resultTimeoutMs: 15_000 });
      expect(`${mode}: ${bad.summary}`).toStartWith(`${mode}: FAIL`);
    }
  }, 60_000);
});
