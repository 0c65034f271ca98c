// criu-bun migrate: live migration between two criu-bun processes (src/migrate/migrate.ts), with real
// processes in network namespaces made by the test. The workload (workloads/migcounter.py, python3
// in its own PID namespace so that the destination can restore its PIDs while the frozen source
// still holds them on this one machine) keeps writing its memory and checks it against a replay at
// the end; with --echo it serves a TCP client outside (tcp_client.py, checking its own stream).
import { test, expect, beforeAll, afterAll } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { criuBunCommand, holdsFor, REPO_ROOT } from "./harness";
import { Netns, runOk, inNs, tcpCounter, clientBackoffs, waitFor as waitNs } from "./netns";

const nets = new Netns("cbm");
/** waits of this file get 30 s unless told (a migration of a loaded machine takes a while) */
const waitFor = <T>(fn: () => T | null | undefined | false, what: string, ms = 30000) => waitNs(fn, what, ms);
const dirs: string[] = [];
const procs: Subprocess[] = [];
const pids = new Set<number>();
const WL = join(REPO_ROOT, "test", "workloads", "migcounter.py");

/** a veth pair between namespaces a and b, addresses NET.1 (a) and NET.2 (b) /24, both up */
function veth(a: string, b: string, net: string, names = ["va", "vb"]) {
  runOk(["ip", "-n", a, "link", "add", names[0], "type", "veth", "peer", "name", names[1], "netns", b]);
  runOk(["ip", "-n", a, "addr", "add", `${net}.1/24`, "dev", names[0]]);
  runOk(["ip", "-n", b, "addr", "add", `${net}.2/24`, "dev", names[1]]);
  runOk(["ip", "-n", a, "link", "set", names[0], "up"]);
  runOk(["ip", "-n", b, "link", "set", names[1], "up"]);
}
function tmp(t: string) {
  const d = mkdtempSync(join(tmpdir(), `criu-bun-mig-${t}-`));
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
const count = (w: string) => Number(text(join(w, "count")) ?? 0);
const status = (pid: number, key: string) =>
  new RegExp(`^${key}:\\s*(.*)$`, "m").exec(text(`/proc/${pid}/status`) ?? "")?.[1];
/** the lazy-pages daemons (post-copy) a destination with -D d started, still there */
const daemonsOf = (d: string) =>
  readdirSync("/proc")
    .filter((x) => /^\d+$/.test(x))
    .filter((x) => {
      const c = text(`/proc/${x}/cmdline`);
      return !!c && c.includes("lazy-pages") && c.includes(d);
    });
const fdTargets = (pid: number) =>
  readdirSync(`/proc/${pid}/fd`).map((f) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${f}`);
    } catch {
      return "";
    }
  });

/** migcounter.py in its own PID namespace (and session), in netns ns; returns its pid here. */
async function startCounter(ns: string, mib: number, echo?: string, extra = "") {
  const w = tmp("wl");
  // the root of its PID namespace (pid 1 there), in our mount namespace
  const cmd = `exec python3 ${WL} ${w} ${mib} ${echo ? `--echo ${echo}` : ""} ${extra} </dev/null >/dev/null 2>${w}/stderr`;
  const p = Bun.spawn(inNs(ns, ["unshare", "--pid", "--fork", "sh", "-c", cmd]), {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
  });
  procs.push(p);
  await waitFor(() => existsSync(join(w, "ready")), "workload ready");
  const pid = Number((text(`/proc/${p.pid}/task/${p.pid}/children`) ?? "").trim());
  expect(pid).toBeGreaterThan(0);
  pids.add(pid);
  return { pid, w };
}

/** The destination: migrate --listen in netns ns, its stdout in a file; resolves once it listens. */
async function listen(
  ns: string,
  port: number,
  address = "0.0.0.0",
  extra: string[] = [],
  env: Record<string, string> = {}
) {
  const d = tmp("dst");
  const p = Bun.spawn(
    inNs(ns, [
      ...criuBunCommand(),
      "migrate",
      "--listen",
      String(port),
      "--address",
      address,
      "-D",
      d,
      "-v4",
      "-o",
      "migrate.log",
      ...extra,
    ]),
    {
      stdin: "ignore",
      stdout: Bun.file(join(d, "stdout")),
      stderr: Bun.file(join(d, "stderr")),
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
    }
  );
  procs.push(p);
  await waitFor(() => (text(join(d, "stdout")) ?? "").includes("listening on"), "destination listening");
  return {
    p,
    d,
    out: () => text(join(d, "stdout")) ?? "",
    err: () => text(join(d, "stderr")) ?? "",
    log: () => text(join(d, "migrate.log")) ?? "",
  };
}

/** A migration that must have succeeded (both sides' logs otherwise), its destination exited 0: the source's result. */
async function succeeded(src: ReturnType<typeof migrate>, dst: Awaited<ReturnType<typeof listen>>) {
  const r = await src.done();
  if (r.code !== 0)
    throw new Error(
      `migrate failed (${r.code}): ${r.stderr}\n${src.log()}\n--- destination:\n${dst.err()}${dst.log()}`
    );
  expect(await dst.p.exited).toBe(0);
  return r;
}

/** The copy's PID as the destination printed it (killed after the test). */
function restoredPid(dst: Awaited<ReturnType<typeof listen>>) {
  const npid = Number(/restored pid (\d+)/.exec(dst.out())?.[1]);
  expect(npid).toBeGreaterThan(0);
  pids.add(npid);
  return npid;
}

function migrate(ns: string, pid: number, to: string, extra: string[] = [], env: Record<string, string> = {}) {
  const s = tmp("src");
  const p = Bun.spawn(
    inNs(ns, [
      ...criuBunCommand(),
      "migrate",
      "-t",
      String(pid),
      "--to",
      to,
      "-D",
      s,
      "-v4",
      "-o",
      "migrate.log",
      ...extra,
    ]),
    {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
    }
  );
  procs.push(p);
  return {
    p,
    s,
    log: () => text(join(s, "migrate.log")) ?? "",
    done: async () => ({
      code: await p.exited,
      stdout: await new Response(p.stdout).text(),
      stderr: await new Response(p.stderr).text(),
    }),
  };
}

async function result(w: string) {
  writeFileSync(join(w, "go"), "");
  return (await waitFor(() => text(join(w, "result")), "workload result")).trim();
}

beforeAll(() => {});
afterAll(() => {
  for (const p of procs)
    try {
      p.kill("SIGKILL");
    } catch {}
  for (const pid of pids) {
    const cmd = text(`/proc/${pid}/cmdline`);
    if (cmd?.includes("migcounter.py"))
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
  }
  nets.cleanup();
  if (!process.env.CRIU_BUN_KEEP) for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test("the workload's check fails when one byte of its memory is wrong (--selftest-corrupt)", async () => {
  const ns = nets.make("self");
  const { w } = await startCounter(ns, 4, undefined, "--selftest-corrupt");
  await waitFor(() => count(w) > 20, "counter running");
  expect(await result(w)).toMatch(/^FAIL: memory differs in 1 of 1024 pages/);
}, 30_000);

test("migrate a python3 counter over loopback: pre-copy rounds send less and less, it keeps counting, its memory is right, the source is gone", async () => {
  const ns = nets.make("lo");
  const { pid, w } = await startCounter(ns, 32);
  await waitFor(() => count(w) > 100, "counter running");
  const dst = await listen(ns, 7501, "127.0.0.1");
  const src = migrate(ns, pid, "127.0.0.1:7501");
  const r = await succeeded(src, dst);
  // round 1 sends every page (32 MiB of bytearray at least), later rounds only what was written
  // (the workload runs, and writes, while a round's pages are read)
  const rounds = [...r.stdout.matchAll(/round (\d+): (\d+) pages, (\d+) bytes/g)].map((m) => ({
    n: Number(m[1]),
    pages: Number(m[2]),
    bytes: Number(m[3]),
  }));
  expect(rounds.length).toBeGreaterThanOrEqual(2);
  // (a round whose read met a mapping that went away leaves the process to the next round, which
  // sends it in full: the largest round is the full one)
  const full = Math.max(...rounds.map((x) => x.pages));
  expect(full).toBeGreaterThan(8192);
  expect(Math.max(...rounds.map((x) => x.bytes))).toBeGreaterThan(32 << 20);
  const fin = /final: (\d+) pages/.exec(r.stdout);
  expect(Number(fin?.[1])).toBeLessThan(full / 4);
  expect(r.stdout).toMatch(/downtime \d+(\.\d+)? ms/);
  // each pre-copy round's state was checked by the destination as a restore would, before the freeze
  // (a round caught while the workload renames its count file is told apart with a warning: the file it had open is gone)
  for (const x of rounds)
    expect(dst.log()).toMatch(
      new RegExp(
        `round ${x.n}: its images would (restore \\(checked in|not restore as they are: process 1 fd \\d+: '[^']*count\\.tmp' does not exist any more)`
      )
    );
  const npid = restoredPid(dst);
  // post-copy (the default): the restore wrote only the last round's pages; the pre-copied ones came
  // from the destination's lazy-pages daemon, after the tree ran, and that daemon is gone
  expect(dst.out()).toContain(`restored pid ${npid} in`);
  expect(dst.out()).toContain("(its pre-copied memory follows)");
  expect(dst.out()).toMatch(new RegExp(`all memory of pid ${npid} in \\d`));
  // (of the parent images' pages the restore itself took only those outside private anonymous memory)
  const taken = [...dst.log().matchAll(/: (\d+) pages taken from the parent images/g)].reduce(
    (s, m) => s + Number(m[1]),
    0
  );
  expect(taken).toBeLessThan(2048);
  const lazyLog = text(join(dst.d, "lazy-pages.log")) ?? "";
  const served = Number(/lazy-pages: done: (\d+) of (\d+) pages served/.exec(lazyLog)?.[1] ?? 0);
  expect(served).toBeGreaterThan(8192 - Number(fin?.[1]));
  expect(daemonsOf(dst.d)).toEqual([]);
  // the source is gone, the restored one counts on from where it was
  await waitFor(() => !existsSync(`/proc/${pid}`), "source gone");
  const c0 = count(w);
  await waitFor(() => count(w) > c0 + 100, "restored counter counting");
  expect(fdTargets(npid).some((t) => t.includes("userfaultfd"))).toBe(false);
  expect(await result(w)).toStartWith("PASS");
}, 90_000);

test("migrate a counter that flips VmFlags of four mappings at every step (MADV_DONTFORK, DONTDUMP, HUGEPAGE, mlock): the copy shows each one as the source had it when frozen", async () => {
  const ns = nets.make("flags");
  const { pid, w } = await startCounter(ns, 16, undefined, "--flip-flags");
  await waitFor(() => count(w) > 100, "counter running");
  const dst = await listen(ns, 7509, "127.0.0.1");
  const src = migrate(ns, pid, "127.0.0.1:7509");
  await succeeded(src, dst);
  // the flags of every round came from the BPF VMA iterator (its table checked on this kernel
  // before round 1 froze anything) with the tree frozen; where BPF cannot be used, the final
  // round's were read from smaps on the VMA reader Worker while the rest of its state and its
  // memory were collected (round 1's on the main thread: the Worker was starting)
  if (/VmFlags from a BPF task_vma iterator for this run/.test(src.log())) {
    expect(src.log()).toMatch(
      new RegExp(`process ${pid}: \\d+ VMAs read from maps, their flags from the BPF iterator`)
    );
    expect(src.log()).not.toMatch(/VMAs and their flags read from smaps|VMAs read from smaps/);
  } else expect(src.log()).toMatch(/VMAs and their flags read from smaps on a Worker/);
  const npid = restoredPid(dst);
  await waitFor(() => !existsSync(`/proc/${pid}`), "source gone");
  const c0 = count(w);
  await waitFor(() => count(w) > c0 + 50, "restored counter counting");
  expect(status(npid, "VmLck")).toBeDefined();
  expect(await result(w)).toMatch(/^PASS steps=\d+ flips=[1-9]\d*/);
}, 90_000);

test("migrate --listen --no-post-copy: the restore writes every page before the tree runs; it counts on, its memory is right", async () => {
  const ns = nets.make("eager");
  const { pid, w } = await startCounter(ns, 8);
  await waitFor(() => count(w) > 50, "counter running");
  const dst = await listen(ns, 7506, "127.0.0.1", ["--no-post-copy"]);
  const src = migrate(ns, pid, "127.0.0.1:7506");
  await succeeded(src, dst);
  restoredPid(dst);
  expect(dst.out()).not.toContain("follows");
  expect(existsSync(join(dst.d, "lazy-pages.log"))).toBe(false);
  // every page of the 8 MiB went in by the restore itself (the last round's and its parents')
  const written = [
    ...dst.log().matchAll(/Pages: (\d+) written into|: (\d+) pages taken from the parent images/g),
  ].reduce((s, m) => s + Number(m[1] ?? m[2]), 0);
  expect(written).toBeGreaterThan(2048);
  await waitFor(() => !existsSync(`/proc/${pid}`), "source gone");
  const c0 = count(w);
  await waitFor(() => count(w) > c0 + 50, "restored counter counting");
  expect(await result(w)).toStartWith("PASS");
}, 60_000);

/** tcp_client.py (tcp.test.ts's checking echo client) in netns ns */
function client(ns: string, host: string, port: number, name: string, seed: number) {
  const d = tmp("cli");
  const p = Bun.spawn(
    inNs(ns, ["python3", join(REPO_ROOT, "test", "tcp_client.py"), host, String(port), String(seed), d, name]),
    { stdin: "ignore", stdout: "ignore", stderr: Bun.file(join(d, `${name}.stderr`)) }
  );
  procs.push(p);
  const recvd = () => Number((text(join(d, `${name}.progress`)) ?? "0 0").trim().split(" ")[1]);
  return {
    d,
    recvd,
    reach: (n: number, ms = 30000) =>
      waitFor(
        () => {
          const r = text(join(d, `${name}.result`));
          if (r && !r.startsWith("PASS"))
            throw new Error(`client ${name}: ${r}${text(join(d, `${name}.stderr`)) ?? ""}`);
          return recvd() >= n;
        },
        `client ${name} to get ${n} bytes back (has ${recvd()})`,
        ms
      ),
    finish: async () => {
      writeFileSync(join(d, "stop"), "");
      return (await waitFor(() => text(join(d, `${name}.result`)), `client ${name} result`, 60000)).trim();
    },
  };
}

test("the destination dies after the first round: the source goes on untouched (running, not traced, no userfaultfd, its connection unlocked)", async () => {
  // the destination in a namespace of its own: the RST its death gives the control connection is counted there
  const ns = nets.make("die"),
    nd = nets.make("die2");
  veth(ns, nd, "10.77.1");
  const { pid, w } = await startCounter(ns, 16, "127.0.0.1:7601");
  const c = client(ns, "127.0.0.1", 7601, "d1", 11);
  await c.reach(50_000);
  const dst = await listen(nd, 7502, "10.77.1.2");
  const pause = join(tmp("pause"), "paused");
  const src = migrate(ns, pid, "10.77.1.2:7502", ["--tcp-established"], {
    CRIU_BUN_PAUSE: "migrate-round",
    CRIU_BUN_PAUSE_FILE: pause,
  });
  let exited = false;
  src.p.exited.then(() => {
    exited = true;
  });
  await waitFor(() => existsSync(pause) || exited, "source paused after round 1", 60000);
  if (exited) throw new Error(`the source ended before its pause: ${(await src.done()).stderr}\n${src.log()}`);
  // the pre-copy left tracking in the source: it is ended again below
  expect(fdTargets(pid).some((t) => t.includes("userfaultfd"))).toBe(true);
  dst.p.kill("SIGKILL");
  await dst.p.exited;
  // its post-copy daemon, waiting for a restore, goes with it
  await waitFor(() => daemonsOf(dst.d).length === 0, "the destination's lazy-pages daemon gone");
  rmSync(pause);
  const r = await src.done();
  expect(r.code).not.toBe(0);
  // one error line (in the log: -o keeps the console quiet), naming the destination's end; no stack
  expect(r.stderr).toBe("");
  const errs = src
    .log()
    .split("\n")
    .filter((l) => l.includes("Error ("));
  expect(errs).toEqual([expect.stringMatching(/Error \(migrate\): .*the destination/)]);
  expect(src.log()).not.toMatch(/    at /);
  expect(src.log()).toContain("goes on running here");
  // untouched: running, not traced, the tracking fd closed, counting, echoing
  expect(status(pid, "TracerPid")).toBe("0");
  expect(status(pid, "State")).not.toMatch(/^[tT]/);
  expect(fdTargets(pid).some((t) => t.includes("userfaultfd"))).toBe(false);
  const c0 = count(w),
    r0 = c.recvd();
  await waitFor(() => count(w) > c0 + 100, "source counting after the failed migration");
  await c.reach(r0 + 100_000);
  expect(tcpCounter(ns, "OutRsts")).toBe(0);
  expect(await c.finish()).toStartWith("PASS");
  expect(await result(w)).toStartWith("PASS");
}, 90_000);

test("migrate with --tcp-established from one namespace to another: the client outside keeps its connection, no RST, the counter's memory is right", async () => {
  const nc = nets.make("cli"),
    na = nets.make("src"),
    nb = nets.make("dst");
  const srvAddr = "10.77.3.2",
    port = 7602;
  veth(na, nb, "10.77.2"); // the migration's own link
  // the service address: on na's link to the client now, and already on nb's (whose client end stays
  // down until the switch-over, as a router would move the address)
  runOk(["ip", "-n", nc, "link", "add", "vc", "type", "veth", "peer", "name", "vs", "netns", na]);
  runOk(["ip", "-n", nc, "link", "add", "vc2", "type", "veth", "peer", "name", "vs2", "netns", nb]);
  runOk(["ip", "-n", nc, "addr", "add", "10.77.3.1/24", "dev", "vc"]);
  runOk(["ip", "-n", na, "addr", "add", `${srvAddr}/24`, "dev", "vs"]);
  runOk(["ip", "-n", nb, "addr", "add", `${srvAddr}/24`, "dev", "vs2"]);
  for (const [ns, dev] of [
    [nc, "vc"],
    [na, "vs"],
    [nb, "vs2"],
  ])
    runOk(["ip", "-n", ns, "link", "set", dev, "up"]);
  const { pid, w } = await startCounter(na, 16, `${srvAddr}:${port}`);
  const c = client(nc, srvAddr, port, "m1", 21);
  await c.reach(100_000);
  const dst = await listen(nb, 7503, "10.77.2.2");
  const src = migrate(na, pid, "10.77.2.2:7503", ["--tcp-established"]);
  const r = await succeeded(src, dst);
  restoredPid(dst);
  await waitFor(() => !existsSync(`/proc/${pid}`), "source gone");
  // the dump's lock stays in the source's namespace (found there by migrate), and migrate says how
  // to lift it: until the switch-over below, the client's packets still come here, and without the
  // lock this namespace would answer them with RST
  expect(r.stdout).toMatch(
    /the network lock \(nftables table inet CRIU-\S+\) stays here: .*nft delete table inet CRIU-/
  );
  // a slow switch-over: the client's next retransmission still goes to the source's namespace,
  // where the lock drops it (without the lock that namespace answers RST and the connection dies:
  // this test failed here when migrate deleted the lock after killing the source)
  const b0 = Math.max(0, ...clientBackoffs(nc, port));
  await waitFor(() => {
    const b = clientBackoffs(nc, port);
    return b.length === 0 || b[0] > b0;
  }, "the client retransmitting into the source's namespace");
  expect(clientBackoffs(nc, port).length).toBe(1);
  // the switch-over: the source's namespace goes, the client's link to the destination comes up.
  // Its link to the client first goes down: a namespace being deleted loses its nftables hooks (the
  // lock) before its interfaces, and a retransmission arriving in between gets a RST (tcp.test's
  // migration case caught one)
  runOk(["ip", "-n", nc, "link", "set", "vc", "down"]);
  nets.del(na);
  const before = c.recvd();
  runOk(["ip", "-n", nc, "addr", "add", "10.77.3.1/24", "dev", "vc2"]);
  runOk(["ip", "-n", nc, "link", "set", "vc2", "up"]);
  try {
    await c.reach(before + 150_000, 40000);
  } catch (e: any) {
    throw new Error(
      `${e.message}\nworkload: ${text(join(w, "stderr"))}\nsource:\n${src
        .log()
        .split("\n")
        .filter((l) => /tcp|TCP|rror|arn/.test(l))
        .join("\n")}\ndestination:\n${dst
        .log()
        .split("\n")
        .filter((l) => /tcp|TCP|rror|arn/.test(l))
        .join("\n")}`
    );
  }
  const c0 = count(w);
  await waitFor(() => count(w) > c0 + 100, "restored counter counting");
  expect(await c.finish()).toStartWith("PASS");
  expect(tcpCounter(nb, "OutRsts")).toBe(0);
  expect(tcpCounter(nc, "OutRsts")).toBe(0);
  expect(await result(w)).toStartWith("PASS");
}, 90_000);

test("the source dies after the first round: the destination fails in one line, restores nothing and leaves no images", async () => {
  const ns = nets.make("sdie");
  const { pid, w } = await startCounter(ns, 8);
  const dst = await listen(ns, 7504, "127.0.0.1");
  const pause = join(tmp("pause"), "paused");
  const src = migrate(ns, pid, "127.0.0.1:7504", [], { CRIU_BUN_PAUSE: "migrate-round", CRIU_BUN_PAUSE_FILE: pause });
  let exited = false;
  src.p.exited.then(() => {
    exited = true;
  });
  await waitFor(() => existsSync(pause) || exited, "source paused after round 1", 60000);
  if (exited) throw new Error(`the source ended before its pause: ${(await src.done()).stderr}\n${src.log()}`);
  src.p.kill("SIGKILL");
  expect(await dst.p.exited).toBe(1);
  const errs = dst
    .log()
    .split("\n")
    .filter((l) => l.includes("Error ("));
  expect(errs.length).toBe(1);
  expect(errs[0]).toMatch(
    /Error \(migrate\): the source closed the connection after round 1, before the restore; nothing was restored/
  );
  expect(dst.out()).not.toContain("restored pid");
  expect(readdirSync(dst.d).filter((f) => f.startsWith(".criu-bun-migrate"))).toEqual([]);
  expect(daemonsOf(dst.d)).toEqual([]);
  // the workload was not frozen when its migrator died: it runs on (its tracking fd stays: nobody is left to close it)
  const c0 = count(w);
  await waitFor(() => count(w) > c0 + 50, "source counting");
  expect(status(pid, "TracerPid")).toBe("0");
  expect(await result(w)).toStartWith("PASS");
}, 60_000);

test("the restore on the destination fails: the source is resumed untouched and says why in one line", async () => {
  const ns = nets.make("rfail");
  const { pid, w } = await startCounter(ns, 8);
  await waitFor(() => count(w) > 50, "counter running");
  const { p, d } = await listen(ns, 7505, "127.0.0.1", [], { CRIU_BUN_FAULT: "restore-end" });
  const src = migrate(ns, pid, "127.0.0.1:7505");
  const r = await src.done();
  expect(r.code).toBe(1);
  expect(await p.exited).toBe(1);
  const errs = src
    .log()
    .split("\n")
    .filter((l) => l.includes("Error ("));
  expect(errs).toEqual([expect.stringMatching(/Error \(migrate\): the destination could not restore: /)]);
  expect(src.log()).toContain("resumed as it was");
  expect(status(pid, "TracerPid")).toBe("0");
  expect(fdTargets(pid).some((t) => t.includes("userfaultfd"))).toBe(false);
  expect(readdirSync(d).filter((f) => f.startsWith(".criu-bun-migrate"))).toEqual([]);
  // the post-copy daemon the failed restore had connected to is gone too
  expect(daemonsOf(d)).toEqual([]);
  const c0 = count(w);
  await waitFor(() => count(w) > c0 + 50, "source counting after the failed restore");
  expect(await result(w)).toStartWith("PASS");
}, 60_000);

test("post-copy: the destination's lazy-pages daemon killed while the memory still comes in: the restored copy is killed, the destination says so in one line and leaves nothing", async () => {
  const ns = nets.make("pcdie");
  // one page written a second, and the background copy held to 1 MiB/s: 32 MiB take about 16 s
  const { pid } = await startCounter(ns, 32, undefined, "--rate 1");
  const { p, d } = await listen(ns, 7507, "127.0.0.1", [], { CRIU_BUN_LAZY_RATE: "1" });
  const src = migrate(ns, pid, "127.0.0.1:7507");
  const r = await src.done();
  if (r.code !== 0) throw new Error(`migrate failed (${r.code}): ${r.stderr}\n${src.log()}`);
  const npid = Number(/restored pid (\d+)/.exec(text(join(d, "stdout")) ?? "")?.[1]);
  expect(npid).toBeGreaterThan(0);
  pids.add(npid);
  expect(text(join(d, "stdout"))).not.toContain("all memory of pid");
  const daemons = daemonsOf(d);
  expect(daemons.length).toBe(1);
  process.kill(Number(daemons[0]), "SIGKILL");
  expect(await p.exited).toBe(1);
  const log = text(join(d, "migrate.log")) ?? "";
  const errs = log.split("\n").filter((l) => l.includes("Error ("));
  expect(errs).toEqual([
    expect.stringMatching(
      /the lazy-pages daemon went away before the restored memory was all in; the restored tree \(root \d+, 1 process\(es\)\) was killed/
    ),
  ]);
  expect(log).not.toMatch(/    at /);
  // the copy with missing memory does not run on; nothing of the migration is left
  await waitFor(
    () => !existsSync(`/proc/${npid}`) || /^Z/.test(status(npid, "State") ?? ""),
    "the restored copy killed"
  );
  expect(daemonsOf(d)).toEqual([]);
  expect(readdirSync(d).filter((f) => f.startsWith(".criu-bun-migrate"))).toEqual([]);
}, 90_000);

/** the source's stopped/running state: the first letter of State in /proc/PID/status */
const stateOf = (pid: number) => (status(pid, "State") ?? "gone")[0];

test("post-copy from the source: the last round's dirty pages of private anonymous memory are not sent while frozen; the copy takes them from the frozen source after it runs, and its memory (every page, the last round's writes included) is right", async () => {
  const ns = nets.make("pcsrc");
  // 3000 pages written a second: every round leaves thousands of dirty pages for the next
  const { pid, w } = await startCounter(ns, 16, undefined, "--rate 3000");
  await waitFor(() => count(w) > 500, "counter running");
  const niceOf = (p: number) => (text(`/proc/${p}/stat`) ?? "").split(") ")[1]?.split(" ")[16];
  const nice0 = niceOf(pid);
  const dst = await listen(ns, 7508, "127.0.0.1");
  const src = migrate(ns, pid, "127.0.0.1:7508");
  const r = await succeeded(src, dst);
  const npid = restoredPid(dst);
  // the final round sent only memory a restore cannot take lazily (private file mappings' pages);
  // the pages the tree wrote since the last pre-copy round went after its copy ran, from here
  const pc = /final: (\d+) pages .*; (\d+) pages post-copied from here after the copy ran \(of (\d+) left here\)/.exec(
    r.stdout
  );
  expect(pc).not.toBeNull();
  const [sentFrozen, served, left] = [Number(pc![1]), Number(pc![2]), Number(pc![3])];
  expect(left).toBeGreaterThan(100);
  expect(served).toBe(left);
  expect(r.stdout).toMatch(
    /the tree runs on the destination \(pid \d+\) after [\d.]+ ms frozen; \d+ of its pages go from here now \(post-copy\)/
  );
  // what the final round read while frozen: no page of the bytearray (a run of private anonymous memory)
  expect(src.log()).toMatch(
    new RegExp(
      `process ${pid}: ${left} page\\(s\\) of private anonymous memory left here for post-copy, ${sentFrozen} sent now`
    )
  );
  // the restored copy was let run only once the source had committed (it stops rather than ever run again)
  expect(dst.log()).toContain("migrate: the source committed");
  expect(src.log()).toContain("committed to its copy");
  const lazyLog = text(join(dst.d, "lazy-pages.log")) ?? "";
  expect(lazyLog).toMatch(
    new RegExp(`lazy-pages: all ${served} pages the source kept are in; the source was told to finish`)
  );
  expect(daemonsOf(dst.d)).toEqual([]);
  // the frozen window ran at nice -20 on both sides; the copy has the nice it was dumped with
  expect(dst.log()).toContain("migrate: the frozen window runs at nice -20");
  expect(niceOf(npid)).toBe(nice0);
  await waitFor(() => !existsSync(`/proc/${pid}`), "source gone");
  const c0 = count(w);
  await waitFor(() => count(w) > c0 + 500, "restored counter counting");
  // migcounter replays every step and compares every page: a page of the last round missing or stale fails it
  expect(await result(w)).toStartWith("PASS");
}, 90_000);

/**
 * A migration paused once the copy runs and the source is about to serve the pages it kept
 * (CRIU_BUN_PAUSE migrate-post-copy); returns the pieces.
 */
async function pausedInPostCopy(name: string, port: number) {
  const ns = nets.make(name);
  const { pid, w } = await startCounter(ns, 16, undefined, "--rate 3000");
  await waitFor(() => count(w) > 500, "counter running");
  const dst = await listen(ns, port, "127.0.0.1");
  const pause = join(tmp("pause"), "paused");
  const src = migrate(ns, pid, `127.0.0.1:${port}`, [], {
    CRIU_BUN_PAUSE: "migrate-post-copy",
    CRIU_BUN_PAUSE_FILE: pause,
  });
  let exited = false;
  src.p.exited.then(() => {
    exited = true;
  });
  await waitFor(() => existsSync(pause) || exited, "source paused in its post-copy", 60000);
  if (exited) throw new Error(`the source ended before its pause: ${(await src.done()).stderr}\n${src.log()}`);
  const npid = restoredPid(dst);
  expect(src.log()).toMatch(/[1-9]\d* of its pages go from here now \(post-copy\)/);
  return { pid, w, dst, src, pause, npid };
}

test("the source's migrate killed in the middle of the post-copy: the copy (missing pages only the source had) is killed, the destination says so in one line, and the source tree is left stopped, whole", async () => {
  const { pid, w, dst, src, npid } = await pausedInPostCopy("pckill", 7509);
  src.p.kill("SIGKILL");
  expect(await dst.p.exited).toBe(1);
  const errs = dst
    .log()
    .split("\n")
    .filter((l) => l.includes("Error ("));
  expect(errs).toEqual([
    expect.stringMatching(
      /the lazy-pages daemon went away before the restored memory was all in; the restored tree \(root \d+, 1 process\(es\)\) was killed \(the daemon: .*/
    ),
  ]);
  await waitFor(
    () => !existsSync(`/proc/${npid}`) || /^Z/.test(status(npid, "State") ?? ""),
    "the restored copy killed"
  );
  expect(daemonsOf(dst.d)).toEqual([]);
  // the source was committed to its copy: with criu-bun gone it stops (the queued SIGSTOP), it
  // does not run on beside a copy that ran
  await waitFor(() => status(pid, "TracerPid") === "0", "source untraced");
  await waitFor(() => stateOf(pid) === "T", "source stopped");
  const c0 = count(w);
  await holdsFor("the stopped source does not count on", () => count(w) === c0 && stateOf(pid) === "T", 300);
  // it is whole: let go by hand, it counts on and its memory is right
  process.kill(pid, "SIGCONT");
  await waitFor(() => count(w) > c0 + 200, "source counting after SIGCONT");
  expect(await result(w)).toStartWith("PASS");
}, 90_000);

test("the destination's lazy-pages daemon killed in the middle of the post-copy from the source: the copy is killed and the source, committed, fails in one line and is left stopped, not resumed", async () => {
  const { pid, w, dst, src, pause, npid } = await pausedInPostCopy("pcdkill", 7510);
  const daemons = daemonsOf(dst.d);
  expect(daemons.length).toBe(1);
  process.kill(Number(daemons[0]), "SIGKILL");
  expect(await dst.p.exited).toBe(1);
  await waitFor(
    () => !existsSync(`/proc/${npid}`) || /^Z/.test(status(npid, "State") ?? ""),
    "the restored copy killed"
  );
  rmSync(pause);
  const r = await src.done();
  expect(r.code).toBe(1);
  expect(r.stderr).toBe("");
  const errs = src
    .log()
    .split("\n")
    .filter((l) => l.includes("Error ("));
  expect(errs).toEqual([
    expect.stringMatching(
      /the lazy-pages daemon closed the connection before the restore had all its memory .*; the source \(pid \d+\) is left stopped, not resumed since its copy ran/
    ),
  ]);
  expect(src.log()).not.toMatch(/    at /);
  expect(status(pid, "TracerPid")).toBe("0");
  await waitFor(() => stateOf(pid) === "T", "source stopped");
  // its tracking ended (the final round leaves it to the kill; a tree that lives on has it closed)
  expect(fdTargets(pid).some((t) => t.includes("userfaultfd"))).toBe(false);
  const c0 = count(w);
  process.kill(pid, "SIGCONT");
  await waitFor(() => count(w) > c0 + 200, "source counting after SIGCONT");
  expect(await result(w)).toStartWith("PASS");
}, 90_000);
