// TCP connections across dump and restore (--tcp-established), with real sockets in network
// namespaces made by the test: a rate-limited echo server (workloads/tcpserver.c) is dumped while
// python3 clients (tcp_client.py, never dumped) have data in flight both ways; the clients check
// their own byte streams, a packet capture (tcp_sniff.py, AF_PACKET) and the namespace's TCP
// counters show that no RST was sent.
import { test, expect, beforeAll, afterAll, describe } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { buildWorkloads, workloadBin, REPO_ROOT } from "./harness";
import { Netns, runOk, inNs, tcpCounter, waitFor, clientBackoffs, criuIn, dumpIn, restoreIn } from "./netns";
import { readImage, readImagePayloads } from "../src/images/image";

const nets = new Netns("cbt");
const dirs: string[] = [];
const procs: Subprocess[] = [];
const servers: { pid: number; dir: string; proc?: Subprocess }[] = [];

function tmp(t: string) {
  const d = mkdtempSync(join(tmpdir(), `criu-bun-tcp-${t}-`));
  dirs.push(d);
  return d;
}
function text(p: string): string | null {
  try {
    return readFileSync(p, "utf8");
  } catch {
    return null;
  }
}

async function startServer(ns: string, port: number, args: string[]) {
  const dir = tmp("srv");
  const p = Bun.spawn(inNs(ns, [workloadBin("tcpserver"), dir, String(port), ...args]), {
    detached: true,
    stdin: "ignore",
    stdout: "ignore",
    stderr: Bun.file(join(dir, "stderr")),
  });
  procs.push(p);
  const pid = Number(await waitFor(() => text(join(dir, "ready")), "server ready"));
  const srv = { pid, dir, proc: p };
  servers.push(srv);
  return srv;
}

class Client {
  proc: Subprocess;
  constructor(
    public ns: string,
    host: string,
    port: number,
    public dir: string,
    public name: string,
    seed: number
  ) {
    this.proc = Bun.spawn(
      inNs(ns, ["python3", join(REPO_ROOT, "test", "tcp_client.py"), host, String(port), String(seed), dir, name]),
      { stdin: "ignore", stdout: "ignore", stderr: Bun.file(join(dir, `${name}.stderr`)) }
    );
    procs.push(this.proc);
  }
  progress(): { sent: number; recvd: number } {
    const t = text(join(this.dir, `${this.name}.progress`));
    const [sent, recvd] = (t ?? "0 0").trim().split(" ").map(Number);
    return { sent, recvd };
  }
  result() {
    return text(join(this.dir, `${this.name}.result`));
  }
  /** the client's local port (it writes it once connected) */
  port() {
    return waitFor(() => Number(text(join(this.dir, `${this.name}.port`))), `client ${this.name} connected`);
  }
  /** stop reading (the server's queues towards it fill up) or read again */
  pause(on: boolean) {
    if (on) writeFileSync(join(this.dir, `${this.name}.pause`), "");
    else rmSync(join(this.dir, `${this.name}.pause`), { force: true });
  }
  /** wait until recvd >= n, failing early if the client gave up */
  async reach(n: number, ms = 30000) {
    await waitFor(
      () => {
        const r = this.result();
        if (r && !r.startsWith("PASS"))
          throw new Error(`client ${this.name}: ${r}${text(join(this.dir, `${this.name}.stderr`)) ?? ""}`);
        return this.progress().recvd >= n;
      },
      `client ${this.name} to get ${n} bytes back (has ${this.progress().recvd})`,
      ms
    );
  }
}

const criu = criuIn,
  dump = dumpIn,
  restore = restoreIn;
/** established TCP sockets of a namespace with their queues (/proc/net/tcp and tcp6: tx = unacked or unsent bytes, rx = bytes not read) */
function tcpQueues(ns: string) {
  return runOk(inNs(ns, ["cat", "/proc/net/tcp", "/proc/net/tcp6"]))
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 4 && f[3] === "01")
    .map((f) => {
      const [tx, rx] = f[4].split(":").map((h) => parseInt(h, 16));
      return { lport: parseInt(f[1].split(":")[1], 16), rport: parseInt(f[2].split(":")[1], 16), tx, rx };
    });
}
/**
 * Wait until the server's socket of a paused client holds data both ways and nothing moves any
 * more (the client reads nothing, so the server's send queue cannot drain; the server, blocked on
 * sending, reads nothing, so its receive queue stays full): the same queues on both ends for 200 ms.
 */
async function waitQueuesFull(ns: string, port: number, cport: number) {
  let last = "",
    seen = "none",
    since = 0;
  try {
    await waitFor(() => {
      const q = tcpQueues(ns);
      const srv = q.find((s) => s.lport === port && s.rport === cport),
        cli = q.find((s) => s.lport === cport && s.rport === port);
      const now = JSON.stringify({ srv, cli });
      seen = now;
      if (!srv || !cli || srv.tx === 0 || srv.rx === 0) {
        last = "";
        return false;
      }
      if (now !== last) {
        last = now;
        since = Date.now();
        return false;
      }
      return Date.now() - since >= 200;
    }, "");
  } catch {
    throw new Error(
      `timeout: server queues towards the paused client (port ${cport}) full and still; last seen ${seen}`
    );
  }
}
function go(dir: string) {
  writeFileSync(join(dir, "go.tmp"), "go\n");
  renameSync(join(dir, "go.tmp"), join(dir, "go"));
}
async function serverResult(dir: string) {
  return (await waitFor(() => text(join(dir, "result")), "server result")).trim();
}
async function finishClients(dir: string, clients: Client[]) {
  writeFileSync(join(dir, "stop"), "");
  for (const c of clients) {
    const r = await waitFor(() => c.result(), `client ${c.name} result`, 60000);
    expect(`${c.name}: ${r.trim()}`).toStartWith(`${c.name}: PASS`);
  }
}
/** files.img inet entries and the tcp-stream images of a dump */
function inetImages(dir: string) {
  const files = readImage(dir, "files.img", "FILES")
    .filter((f) => f.isk)
    .map((f) => f.isk!);
  const streams = files
    .filter((k) => k.proto === 6 && k.state === 1)
    .map((k) => {
      const [item] = readImagePayloads(dir, `tcp-stream-${k.ino.toString(16)}.img`, "TCP_STREAM");
      return { isk: k, st: item.msg, payload: item.payload };
    });
  return { files, streams };
}
function killServer(s: { pid: number; dir: string }) {
  const cmd = text(`/proc/${s.pid}/cmdline`);
  if (cmd && cmd.split("\0").includes(s.dir))
    try {
      process.kill(s.pid, "SIGKILL");
    } catch {}
}

beforeAll(async () => {
  await buildWorkloads();
});
afterAll(async () => {
  // the UDP test's workload and images (harness, engine-helpers)
  (await import("./harness")).cleanup();
  (await import("./engine-helpers")).cleanupImages();
  for (const s of servers) killServer(s);
  for (const p of procs)
    try {
      p.kill("SIGKILL");
    } catch {}
  nets.cleanup();
  if (!process.env.CRIU_BUN_KEEP) for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/**
 * Echo server with clients in one namespace over loopback: dump with data in flight, keep the
 * namespace locked for a while (clients retransmit into the lock), restore, streams go on.
 */
async function echoAcrossDump(name: string, port: number, listen: string, hosts: string[]) {
  const ns = nets.make(name);
  const work = tmp(name);
  const sniffer = Bun.spawn(inNs(ns, ["python3", join(REPO_ROOT, "test", "tcp_sniff.py"), "lo", work, String(port)]), {
    stdin: "ignore",
    stdout: "ignore",
    stderr: Bun.file(join(work, "sniff.stderr")),
  });
  procs.push(sniffer);
  await waitFor(() => existsSync(join(work, "sniff.ready")), "sniffer ready");
  const srv = await startServer(ns, port, [`--addr=${listen}`, `--expect=${hosts.length + 1}`]);
  const clients = hosts.map((h, i) => new Client(ns, h, port, work, `c${i + 1}`, 1000 + i));
  for (const c of clients) await c.reach(200_000);
  // the first client stops reading: the server's queues towards it are certain to hold data both
  // ways at the dump, whatever the load; the others keep streaming through the freeze and lock
  const cport = await clients[0].port();
  clients[0].pause(true);
  await waitQueuesFull(ns, port, cport);
  const rsts0 = tcpCounter(ns, "OutRsts");
  const img = tmp(`${name}-img`);
  dump(ns, srv.pid, img, ["--tcp-established"]);

  // the images: a listener and one stream per client, data queued both ways
  const { files, streams } = inetImages(img);
  expect(files.filter((k) => k.state === 10).length).toBe(1);
  expect(streams.length).toBe(hosts.length);
  for (const s of streams) {
    expect(s.payload.length).toBe(s.st.inqLen + s.st.outqLen);
    expect(s.st.inqLen + s.st.outqLen).toBeGreaterThan(0);
  }
  expect(streams.some((s) => s.st.inqLen > 0)).toBe(true);
  expect(streams.some((s) => s.st.outqLen > 0)).toBe(true);
  // the paused client's stream holds data both ways, as the namespace showed before the dump
  const paused = streams.filter((s) => s.isk.dstPort === cport);
  expect(paused.length).toBe(1);
  expect(paused[0].st.outqLen).toBeGreaterThan(0);
  expect(paused[0].st.inqLen).toBeGreaterThan(0);
  // it reads again while the namespace is locked: its window updates go into the lock
  clients[0].pause(false);

  // locked window: clients keep retransmitting into the lock, nobody answers with a RST
  await waitFor(() => {
    const b = clientBackoffs(ns, port);
    return b.length === hosts.length && b.every((n) => n >= 2);
  }, "every client to time out twice against the lock (ss: backoff >= 2)");
  for (const c of clients) expect(c.result()).toBeNull();
  expect(tcpCounter(ns, "OutRsts")).toBe(rsts0);
  const before = clients.map((c) => c.progress().recvd);
  await restore(ns, img, srv.pid);
  expect(text(join(img, "restore.log"))).toContain("Network unlocked");
  for (const [i, c] of clients.entries()) await c.reach(before[i] + 300_000);
  // the restored listener accepts a new client
  const late = new Client(ns, hosts[0], port, work, "late", 77);
  await late.reach(100_000);
  await finishClients(work, [...clients, late]);
  const sniff = text(join(work, "sniff"))!;
  expect(sniff.split("\n")[0]).toMatch(/^rst=0 /);
  expect(Number(/packets=(\d+)/.exec(sniff)![1])).toBeGreaterThan(100);
  expect(tcpCounter(ns, "OutRsts")).toBe(rsts0);
  go(srv.dir);
  const res = await serverResult(srv.dir);
  expect(res).toStartWith("PASS");
  expect(res).toContain(`accepted=${hosts.length + 1}`);
  sniffer.kill();
  nets.del(ns);
}

test("IPv4 echo server, 3 clients with data in flight both ways: streams continue byte-exact, no RST, listener accepts after restore", async () => {
  await echoAcrossDump("v4", 7101, "127.0.0.1", ["127.0.0.1", "127.0.0.1", "127.0.0.1"]);
}, 120_000);

test("IPv6 and v4-mapped connections on a dual-stack listener", async () => {
  await echoAcrossDump("v6", 7102, "::", ["::1", "::1", "127.0.0.1"]);
}, 120_000);

test("migration: server namespace deleted, recreated with the same address, clients outside keep their connections", async () => {
  const nc = nets.make("mc"),
    na = nets.make("ma");
  const port = 7103,
    srvAddr = "10.231.7.2";
  const veth = (ns: string) => {
    runOk(["ip", "-n", nc, "link", "add", "vc", "type", "veth", "peer", "name", "vs", "netns", ns]);
    runOk(["ip", "-n", nc, "addr", "add", "10.231.7.1/24", "dev", "vc"]);
    runOk(["ip", "-n", ns, "addr", "add", `${srvAddr}/24`, "dev", "vs"]);
    runOk(["ip", "-n", ns, "link", "set", "vs", "up"]);
  };
  veth(na);
  runOk(["ip", "-n", nc, "link", "set", "vc", "up"]);
  const work = tmp("mig");
  // every segment the clients send or get, through both server namespaces: a reset is named with
  // the segments before it, and its time against the steps below tells which namespace sent it
  const sniffer = Bun.spawn(inNs(nc, ["python3", join(REPO_ROOT, "test", "tcp_sniff.py"), "any", work, String(port)]), {
    stdin: "ignore",
    stdout: "ignore",
    stderr: Bun.file(join(work, "sniff.stderr")),
  });
  procs.push(sniffer);
  await waitFor(() => existsSync(join(work, "sniff.ready")), "sniffer ready", 60000);
  const steps: string[] = [];
  const step = (what: string) => steps.push(`${(Date.now() / 1000).toFixed(3)} ${what}`);
  const srv = await startServer(na, port, [`--addr=${srvAddr}`, "--expect=3"]);
  const clients = [0, 1].map((i) => new Client(nc, srvAddr, port, work, `m${i}`, 500 + i));
  for (const c of clients) await c.reach(200_000);
  const img = tmp("mig-img");
  step("dump starts");
  dump(na, srv.pid, img, ["--tcp-established"]);
  step("dumped");
  expect(inetImages(img).streams.length).toBe(2);
  // the lock holds while the clients send into it: each times out against it at least once
  await waitFor(() => {
    const b = clientBackoffs(nc, port);
    return b.length === 2 && b.every((n) => n >= 1);
  }, "every client to time out against the lock (ss: backoff >= 1)");
  step("clients timed out against the lock");
  // the old namespace goes with the clients' end of the link down: a namespace being deleted loses
  // its nftables hooks (the lock) before its interfaces (the kernel's teardown order), and a
  // client's segment arriving in between was answered by its empty port with a RST (caught here:
  // a bare RST, seq = the client's ack, between the deletion and the link going)
  runOk(["ip", "-n", nc, "link", "set", "vc", "down"]);
  nets.del(na);
  step("old namespace deleted");
  // the namespace goes asynchronously; with it the veth pair and so the clients' end
  await waitFor(
    () => Bun.spawnSync(["ip", "-n", nc, "link", "show", "vc"], { stdout: "ignore", stderr: "ignore" }).exitCode !== 0,
    "the old veth pair to go with its namespace"
  );
  step("old link gone");
  const nb = nets.make("mb");
  // the clients' side stays down until the restored sockets exist: nothing reaches an empty namespace
  veth(nb);
  const before = clients.map((c) => c.progress().recvd);
  step("restore starts");
  await restore(nb, img, srv.pid);
  step("restored");
  runOk(["ip", "-n", nc, "link", "set", "vc", "up"]);
  step("clients' link up");
  try {
    for (const [i, c] of clients.entries()) await c.reach(before[i] + 300_000, 40000);
    const late = new Client(nc, srvAddr, port, work, "mlate", 9);
    await late.reach(50_000);
    await finishClients(work, [...clients, late]);
    expect(tcpCounter(nb, "OutRsts")).toBe(0);
    expect(text(join(work, "sniff"))!.split("\n")[0]).toMatch(/^rst=0 /);
  } catch (e: any) {
    // what the server, the restore, the link and both ends' sockets saw: who reset the connection, and why
    const run = (cmd: string[]) => {
      const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
      return r.stdout.toString() + r.stderr.toString();
    };
    const counters = (ns: string) =>
      run(inNs(ns, ["nstat", "-az"]))
        .split("\n")
        .filter((l) => /Abort|Rst|Reset|Timeout|PAWS|Challenge|OutOfWindow|Drop|Prune/.test(l) && !/\s0\s/.test(l))
        .join("\n");
    const status = text(`/proc/${srv.pid}/status`);
    const alive = status ? `running (${/^State:\s*(.*)$/m.exec(status)?.[1]})` : "gone";
    throw new Error(
      `${e.message}\nserver process ${srv.pid}: ${alive}; stderr: ${text(join(srv.dir, "stderr"))}` +
        `\ndump.log (lock):\n${(text(join(img, "dump.log")) ?? "")
          .split("\n")
          .filter((l) => /Network lock|lock could not|killed/.test(l))
          .join("\n")}` +
        `\nrestore.log (tcp):\n${(text(join(img, "restore.log")) ?? "")
          .split("\n")
          .filter((l) => /tcp|TCP|rror|arn/.test(l))
          .join("\n")}` +
        `\nsteps:\n${steps.join("\n")}\ncapture in the clients' namespace (all interfaces):\n${text(join(work, "sniff"))}` +
        `\nss -tie, server side:\n${run(inNs(nb, ["ss", "-tanieo"]))}\nss -tie, clients' side:\n${run(inNs(nc, ["ss", "-tanieo"]))}` +
        `\nTCP counters, server side:\n${counters(nb)}\nclients' side:\n${counters(nc)}`
    );
  }
  go(srv.dir);
  expect(await serverResult(srv.dir)).toStartWith("PASS");
  sniffer.kill();
  nets.del(nb);
  nets.del(nc);
}, 120_000);

test("without --tcp-established the dump refuses established connections; --leave-running keeps serving; --tcp-close restores them closed", async () => {
  const ns = nets.make("opt");
  const port = 7104;
  const work = tmp("opt");
  const srv = await startServer(ns, port, ["--addr=127.0.0.1"]);
  const c = new Client(ns, "127.0.0.1", port, work, "o1", 3);
  await c.reach(100_000);
  const rsts0 = tcpCounter(ns, "OutRsts");
  const img0 = tmp("opt-img0");
  const r = criu(ns, ["dump", "-t", String(srv.pid), "-D", img0]);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain("established TCP connection 127.0.0.1:7104 <-> 127.0.0.1:");
  expect(r.stderr).toContain("--tcp-established");
  // released untouched: still serving
  let at = c.progress().recvd;
  await c.reach(at + 200_000);
  // --leave-running: dumped, unlocked, still serving, new clients welcome
  const img1 = tmp("opt-img1");
  dump(ns, srv.pid, img1, ["--tcp-established", "-R"]);
  expect(inetImages(img1).streams.length).toBe(1);
  at = c.progress().recvd;
  await c.reach(at + 200_000);
  const c2 = new Client(ns, "127.0.0.1", port, work, "o2", 4);
  await c2.reach(50_000);
  await finishClients(work, [c, c2]);
  expect(tcpCounter(ns, "OutRsts")).toBe(rsts0);
  // --tcp-close: the connection's fd comes back as a socket without connection, the listener works
  kill(srv.pid);
  await srv.proc.exited;
  await restore(ns, img1, srv.pid, ["--tcp-close"]);
  expect(text(join(img1, "restore.log"))).toContain("restored closed");
  rmSync(join(work, "stop"));
  const c3 = new Client(ns, "127.0.0.1", port, work, "o3", 5);
  await c3.reach(50_000);
  await finishClients(work, [c3]);
  killServer(srv);
  nets.del(ns);
}, 120_000);

function kill(pid: number) {
  try {
    process.kill(pid, "SIGKILL");
  } catch {}
}

describe("UDP", () => {
  test("bound (IPv4, IPv6) and connected UDP sockets keep their addresses and work after restore", async () => {
    const { startWorkload, trigger, waitResult } = await import("./harness");
    const { dump: dumpW, restore: restoreW, imagesDir } = await import("./engine-helpers");
    const dgram = await import("node:dgram");
    const port = 7300 + Math.floor(Math.random() * 200) * 3;
    const peer = dgram.createSocket("udp4");
    await new Promise<void>((r) => peer.bind(port + 2, "127.0.0.1", () => r()));
    const got: string[] = [];
    peer.on("message", (m) => got.push(m.toString()));
    const w = await startWorkload("udp.py", [String(port)]);
    const dir = imagesDir("udp");
    dumpW(w.pid, dir);
    const r = await restoreW(dir, w.pid);
    trigger(w);
    const replies: string[] = [];
    for (const [fam, host, p] of [
      ["udp4", "127.0.0.1", port],
      ["udp6", "::1", port + 1],
    ] as const) {
      const s = dgram.createSocket(fam);
      const reply = new Promise<string>((res) => s.on("message", (m) => res(m.toString())));
      s.send("ping", p, host);
      replies.push(await reply);
      s.close();
    }
    expect(replies).toEqual(["pong:v4:ping", "pong:v6:ping"]);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
    for (let i = 0; i < 100 && !got.length; i++) await Bun.sleep(10);
    expect(got).toEqual(["hello from the connected socket"]);
    peer.close();
  });
});
