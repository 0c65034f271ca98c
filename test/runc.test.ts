// Container runtimes: criu-bun installed as `criu` (install --as-criu) answers as criu does, and
// real runc drives it. A busybox container whose stdio are pipes is checkpointed and restored
// (`runc restore -d`, and a foreground restore under a new name after --pre-dump and
// --leave-running): runc's inherit_fd gives the restored container runc's new pipes, rst_sibling
// makes it runc's child, cg_root puts it in the new container's cgroups. The shell in it checks its
// own state: the counter in a variable must match the one it wrote into its tmpfs (/dev/shm, saved in
// the images) before the checkpoint. What criu-bun cannot restore exactly (stdio on a file outside
// the container's mounts) is refused with one line in dump.log while the container keeps running.
// Two shapes that hung runc checkpoint once come back whole: an init with 8 threads (the threads
// workload, linked static into the bundle) and a shell holding a SIGSTOPped child (runc has the
// cgroup frozen: the stopped child is seized after the thaw, and is stopped again after restore).
// The bundle is built here; every container, image directory and pipe is removed after.
import { afterAll, expect, test } from "bun:test";
import {
  closeSync,
  openSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { criuBun, criuBunCommand, REPO_ROOT, waitUntil, holdsFor } from "./harness";
import { waitFor } from "./netns";
import { syscall, addr } from "../src/sys/syscall";
import { NR } from "../src/sys/nr";

const tmp = mkdtempSync(join(tmpdir(), "criu-bun-runc-"));
const containers: string[] = [];
const spawned: { kill(s?: number): void }[] = [];
const netnses: string[] = [];
afterAll(() => {
  for (const id of containers) Bun.spawnSync(["runc", "delete", "-f", id]);
  for (const ns of netnses) Bun.spawnSync(["ip", "netns", "del", ns], { stderr: "ignore" });
  for (const fd of heldFds) {
    try {
      closeSync(fd);
    } catch {}
  }
  for (const p of spawned) {
    try {
      p.kill(9);
    } catch {}
  }
  rmSync(tmp, { recursive: true, force: true });
});

const runc = Bun.which("runc");
const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
const built = existsSync(join(REPO_ROOT, "criu-bun"));

/** criu-bun as `criu` in a directory of our own */
function installAsCriu(): string {
  const bin = join(tmp, "bin");
  mkdirSync(bin, { recursive: true });
  const r = criuBun(["install", "--as-criu", "--prefix", bin]);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return join(bin, "criu");
}

test.skipIf(!built)(
  "install --as-criu: a symlink named criu that answers --version as criu 4.2, criu-bun's version in GitID; a foreign criu is left alone",
  () => {
    const criu = installAsCriu();
    const v = Bun.spawnSync([criu, "--version"]);
    expect(v.stdout.toString()).toMatch(/^Version: 4\.2\nGitID: criu_bun \d+\.\d+\.\d+\n$/);
    expect(criuBun(["install", "--as-criu", "--prefix", join(tmp, "bin")]).stdout).toContain("(already)");
    const other = join(tmp, "other");
    mkdirSync(other);
    symlinkSync("/bin/true", join(other, "criu"));
    const r = criuBun(["install", "--as-criu", "--prefix", other]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      `Error (install): ${join(other, "criu")} already points to /bin/true; remove it first`
    );
  }
);

/** a busybox OCI bundle whose shell counts into /tmp/count in its rootfs (and, with checks, more: see counter()) */
function bundle(args?: string[], name = "bundle", edit?: (c: any) => void): string {
  const b = join(tmp, name);
  for (const d of ["bin", "tmp", "proc", "dev", "sys"]) mkdirSync(join(b, "rootfs", d), { recursive: true });
  cpSync(busybox!, join(b, "rootfs/bin/busybox"));
  for (const a of ["sh", "sleep", "cat", "nc", "mkfifo"]) symlinkSync("busybox", join(b, "rootfs/bin", a));
  const spec = Bun.spawnSync(["runc", "spec"], { cwd: b });
  expect(spec.exitCode).toBe(0);
  const c = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
  c.process.terminal = false;
  c.process.args = args ?? ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"];
  c.root.readonly = false;
  edit?.(c);
  writeFileSync(join(b, "config.json"), JSON.stringify(c));
  return b;
}

test.skipIf(!runc || !busybox || !built)(
  "runc checkpoint: past the version probe to DUMP; the container is refused with one line and keeps running",
  async () => {
    const criu = installAsCriu();
    const b = bundle();
    const id = `criu-bun-${process.pid}`;
    containers.push(id);
    // the container keeps the stdio runc gives it: a file, not a pipe someone waits on
    const errFile = join(tmp, "run.err");
    const errFd = openSync(errFile, "w", 0o600);
    const run = Bun.spawnSync(["runc", "run", "-d", id], { cwd: b, stdin: "ignore", stdout: errFd, stderr: errFd });
    closeSync(errFd);
    expect(readFileSync(errFile, "utf8")).toBe("");
    expect(run.exitCode).toBe(0);
    const count = () => Number(readFileSync(join(b, "rootfs/tmp/count"), "utf8").trim() || 0);
    await waitUntil("the counter", () => existsSync(join(b, "rootfs/tmp/count")) && count() > 2);
    const img = join(tmp, "img");
    mkdirSync(img);
    const ck = Bun.spawnSync(["runc", "--criu", criu, "checkpoint", "--image-path", img, "--work-path", img, id], {
      stdout: "pipe",
      stderr: "pipe",
      timeout: 60000,
    });
    const err = ck.stderr.toString();
    expect(err).not.toContain("version check failed");
    expect(err).toContain("criu failed: type ");
    expect(ck.exitCode).not.toBe(0);
    const log = readFileSync(join(img, "dump.log"), "utf8");
    // the request runc sent: what a container needs (its root, mounts, netns left alone, freezer)
    expect(log).toMatch(/rpc: dump with .*root=.*empty_ns=1073741824/);
    const errors = log.split("\n").filter((l) => l.includes("Error"));
    expect(errors).toHaveLength(1);
    // refused with one line naming what criu-bun cannot restore exactly (today: the container's stdio
    // file on a mount outside its mount namespace), after runc answered the dump's notifications
    expect(errors[0]).toMatch(/Error \([a-z]+\): .*(not supported|refused)/);
    expect(log).toContain("Running pre-dump scripts");
    // still running, not frozen, not stopped
    const state = JSON.parse(Bun.spawnSync(["runc", "state", id]).stdout.toString());
    expect(state.status).toBe("running");
    const before = count();
    await waitUntil("the counter to go on", () => count() > before + 2);
    await holdsFor(
      "the container running",
      () => JSON.parse(Bun.spawnSync(["runc", "state", id]).stdout.toString()).status === "running",
      200
    );
  },
  90000
);

/**
 * The self-checking counter: i lives in the shell; /dev/shm/count (a tmpfs of the container's, whose
 * contents are in the images) holds the last value written. Each round compares them and says BAD
 * on a mismatch (a restore that lost the shell's state, or the tmpfs's, or restarted the shell),
 * then prints "tick i" to stdout (a pipe) and writes i to /tmp/count (the rootfs, seen from here).
 */
const COUNTER = [
  "sh",
  "-c",
  "i=0; while :; do i=$((i+1)); read c < /dev/shm/count || c=0; " +
    'if [ "$c" != "$((i-1))" ]; then echo "BAD $c $i"; fi; echo $i > /dev/shm/count; echo $i > /tmp/count; echo "tick $i"; sleep 0.05; done',
];

/** Everything a stream says, as it arrives; done once its last writer is gone. */
function collect(stream: ReadableStream<Uint8Array>) {
  const o = { text: "", done: false };
  (async () => {
    const dec = new TextDecoder();
    for await (const c of stream as any) o.text += dec.decode(c, { stream: true });
    o.done = true;
  })();
  return o;
}
const ticks = (s: string) => [...s.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));
const last = (s: string) => ticks(s).at(-1) ?? 0;

/** A pipe (close-on-exec ends: a child gets one only as its stdio). */
function pipe(): [number, number] {
  const a = new Int32Array(2);
  if (syscall(NR.pipe2, addr(a), 0o2000000) !== 0) throw new Error("pipe2 failed");
  return [a[0], a[1]];
}
const heldFds: number[] = [];
/** runc with its stdio on fresh pipes (Bun's own "pipe" stdio are sockets), which a detached
 *  container keeps: stdin's write end stays here, stdout and stderr are read through cat */
function runcPiped(args: string[], cwd: string) {
  const i = pipe(),
    o = pipe(),
    e = pipe();
  const p = Bun.spawn(["runc", ...args], { cwd, stdin: i[0], stdout: o[1], stderr: e[1] });
  spawned.push(p);
  for (const fd of [i[0], o[1], e[1]]) closeSync(fd);
  heldFds.push(i[1]);
  const cat = (fd: number) => {
    const c = Bun.spawn(["cat"], { stdin: fd, stdout: "pipe", stderr: "ignore" });
    spawned.push(c);
    closeSync(fd);
    return collect(c.stdout);
  };
  return { p, out: cat(o[0]), err: cat(e[0]) };
}
function state(id: string): { status: string; pid: number } | undefined {
  const r = Bun.spawnSync(["runc", "state", id], { stdout: "pipe", stderr: "pipe" });
  return r.exitCode === 0 ? JSON.parse(r.stdout.toString()) : undefined;
}
function pipesOf(pid: number) {
  return [0, 1, 2].map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return "?";
    }
  });
}
function runcOk(args: string[], cwd?: string) {
  const r = Bun.spawnSync(["runc", ...args], { cwd, stdout: "pipe", stderr: "pipe", timeout: 90000 });
  if (r.exitCode !== 0) throw new Error(`runc ${args.join(" ")}: exit ${r.exitCode}: ${r.stderr.toString()}`);
  return r;
}
/** on failure, what criu-bun said */
function logOf(dir: string, file: string) {
  try {
    return readFileSync(join(dir, file), "utf8")
      .split("\n")
      .filter((l) => l.includes("Error"))
      .join("\n");
  } catch {
    return "(no log)";
  }
}

/** runc checkpoint with criu-bun as criu; fails (with dump.log's errors) unless it ends with 0 within timeoutMs; its duration */
function checkpoint(criu: string, id: string, img: string, timeoutMs = 90000) {
  const t0 = performance.now();
  const ck = Bun.spawnSync(["runc", "--criu", criu, "checkpoint", "--image-path", img, "--work-path", img, id], {
    stdout: "pipe",
    stderr: "pipe",
    timeout: timeoutMs,
  });
  expect(`${ck.exitCode} ${ck.stderr}`, logOf(img, "dump.log")).toBe("0 ");
  return performance.now() - t0;
}

test.skipIf(!runc || !busybox || !built)(
  "runc checkpoint, then runc restore -d (32 MiB memory limit): the container's shell carries on from where it was, writing into the restoring runc's pipes, in its rootfs, with the named FIFO it holds there",
  async () => {
    const criu = installAsCriu();
    // with a 32 MiB memory limit: runc moves criu-bun into the container's cgroups before it restores
    // and a named FIFO in its rootfs held open on fd 3 (its path is the container's, not criu-bun's)
    const withFifo = ["sh", "-c", `mkfifo /tmp/f; exec 3<>/tmp/f; ${COUNTER[2]}`];
    const b = bundle(withFifo, "counter", (c) => {
      c.linux.resources = { ...(c.linux.resources ?? {}), memory: { limit: 32 << 20 } };
    });
    const id = `criu-bun-c-${process.pid}`;
    containers.push(id);
    const run = runcPiped(["run", "-d", id], b);
    expect(await run.p.exited).toBe(0);
    const pid0 = state(id)!.pid;
    const before = pipesOf(pid0);
    expect(before.every((l) => l.startsWith("pipe:["))).toBe(true);
    await waitUntil("the container to count", () => last(run.out.text) >= 5, 20000);

    const img = join(tmp, "img-c");
    checkpoint(criu, id, img);
    // the container is gone: runc says so, and the last writer of its stdout pipe has closed it
    expect(state(id)).toBeUndefined();
    await waitUntil("the old stdout pipe to end", () => run.out.done, 10000);
    const n = last(run.out.text);
    expect(run.out.text).not.toContain("BAD");
    // runc kept the names of the container's stdio for restore (its inherit_fd keys)
    expect(JSON.parse(readFileSync(join(img, "descriptors.json"), "utf8"))).toEqual(before);
    const dumpLog = readFileSync(join(img, "dump.log"), "utf8");
    expect(dumpLog).toMatch(/rpc: dump with .*root=.*empty_ns=1073741824/);
    expect(dumpLog).toContain("Dumping finished successfully");

    const rs = runcPiped(["--criu", criu, "restore", "-d", "--image-path", img, "--work-path", img, id], b);
    const rc = await rs.p.exited;
    expect(`${rc} ${rs.err.text}`, logOf(img, "restore.log")).toBe("0 ");
    const st = state(id)!;
    expect(st.status).toBe("running");
    // the memory cgroup's peak: criu-bun's own charge while it restored, plus the container's
    const mem = readFileSync(`/proc/${st.pid}/cgroup`, "utf8")
      .split("\n")
      .find((l) => /^\d+:(memory)?:/.test(l) && (l.includes(":memory:") || l.startsWith("0::")));
    const v1 = /^\d+:memory:(.*)$/m.exec(readFileSync(`/proc/${st.pid}/cgroup`, "utf8"));
    const peakFile = v1
      ? `/sys/fs/cgroup/memory${v1[1]}/memory.max_usage_in_bytes`
      : `/sys/fs/cgroup${mem!.split("::")[1]}/memory.peak`;
    if (existsSync(peakFile))
      console.log(
        `runc restore under a 32 MiB limit: memory cgroup peak ${(Number(readFileSync(peakFile, "utf8")) / 1048576).toFixed(1)} MiB`
      );
    // the restored shell prints into the pipes runc restore was given (inherit_fd), from n+1 on
    await waitUntil("the restored counter to print", () => ticks(rs.out.text).length >= 5, 20000);
    const after = ticks(rs.out.text);
    expect(after[0]).toBe(n + 1);
    expect(after.slice(0, 5)).toEqual([n + 1, n + 2, n + 3, n + 4, n + 5]);
    expect(rs.out.text).not.toContain("BAD");
    const restoreLog = readFileSync(join(img, "restore.log"), "utf8");
    expect(restoreLog).toMatch(/rpc: restore with .*rst_sibling=true.*inherit_fd=/);
    expect(restoreLog).toContain("rst_sibling");
    // its stdio are runc restore's pipes, not the old ones
    const now = pipesOf(st.pid);
    expect(now.every((l) => l.startsWith("pipe:["))).toBe(true);
    expect(now.some((l) => before.includes(l))).toBe(false);
    // its root is the bundle's rootfs: the file it writes there is the one we see
    const inode = (p: string) => statSync(p).ino;
    expect(inode(`/proc/${st.pid}/root/tmp/count`)).toBe(inode(join(b, "rootfs/tmp/count")));
    // fd 3 is the rootfs's FIFO again
    expect(readlinkSync(`/proc/${st.pid}/fd/3`)).toBe("/tmp/f");
    expect(statSync(`/proc/${st.pid}/fd/3`).ino).toBe(inode(join(b, "rootfs/tmp/f")));
    // runc exec joins it and sees the container's files and the counter going on
    const ex = runcOk(["exec", id, "cat", "/dev/shm/count"]);
    expect(Number(ex.stdout.toString().trim())).toBeGreaterThan(n);
    runcOk(["kill", id, "KILL"]);
    await waitUntil("the container to stop", () => state(id)?.status === "stopped", 10000);
    runcOk(["delete", id]);
    expect(state(id)).toBeUndefined();
  },
  120000
);

/**
 * runc's lazy migration on this host, source and copy side by side: a busybox shell keeping `seq`'s
 * output (MIB megabytes in all: its private memory, served lazily) and its md5 in its memory; when
 * /tmp/go appears it hashes the string again and writes its verdict into /tmp/verdict. Returns the
 * pieces: `runc checkpoint --lazy-pages --page-server --status-fd 3` running and ready (its status
 * fd has its byte), and the way to start `criu lazy-pages` and `runc restore --lazy-pages`.
 */
async function lazyMigration(tag: string, seqTo: number) {
  const criu = installAsCriu();
  const sh = [
    "sh",
    "-c",
    `x=$(seq 1 ${seqTo}); h=$(echo "$x" | md5sum); echo "$h" > /tmp/h0; i=0; while :; do i=$((i+1)); echo $i > /tmp/count; ` +
      'if [ -e /tmp/go ]; then rm /tmp/go; if [ "$(echo "$x" | md5sum)" = "$h" ]; then echo PASS > /tmp/verdict; else echo FAIL > /tmp/verdict; fi; fi; sleep 0.05; done',
  ];
  const b = bundle(sh, `lazy-${tag}`);
  for (const a of ["seq", "md5sum", "rm"]) symlinkSync("busybox", join(b, "rootfs/bin", a));
  const id = `criu-bun-lz${tag}-${process.pid}`,
    id2 = `${id}-b`;
  containers.push(id, id2);
  const run = runcPiped(["run", "-d", id], b);
  expect(await run.p.exited).toBe(0);
  const rootTmp = join(b, "rootfs/tmp");
  const count = () => Number(readFileSync(join(rootTmp, "count"), "utf8").trim() || 0);
  await waitUntil("the container to count", () => existsSync(join(rootTmp, "count")) && count() > 2, 30000);
  const want = Bun.spawnSync(["sh", "-c", `seq 1 ${seqTo} | md5sum`])
    .stdout.toString()
    .split(" ")[0];
  expect(readFileSync(join(rootTmp, "h0"), "utf8").split(" ")[0]).toBe(want);

  const img = join(tmp, `img-lz${tag}`),
    work = join(tmp, `work-lz${tag}`),
    work2 = join(tmp, `work-lz${tag}2`);
  for (const d of [img, work, work2]) mkdirSync(d);
  const srv = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = srv.port;
  srv.stop(true);
  // --status-fd 3: a file of ours as runc's fd 3
  const statusFile = join(tmp, `lz${tag}-status`);
  const sfd = openSync(statusFile, "w", 0o600);
  const ck = Bun.spawn(
    [
      "runc",
      "--criu",
      criu,
      "checkpoint",
      "--image-path",
      img,
      "--work-path",
      work,
      "--lazy-pages",
      "--page-server",
      `127.0.0.1:${port}`,
      "--status-fd",
      "3",
      id,
    ],
    { stdio: ["ignore", "pipe", "pipe", sfd] }
  );
  spawned.push(ck);
  closeSync(sfd);
  await waitUntil(
    `the lazy dump to be ready (runc's status fd)\n${logOf(work, "dump.log")}`,
    () => statSync(statusFile).size > 0 || ck.exitCode !== null,
    60000
  );
  expect(ck.exitCode, logOf(work, "dump.log")).toBeNull();
  expect([...readFileSync(statusFile)]).toEqual([0]);
  const dumpLog = () => readFileSync(join(work, "dump.log"), "utf8");
  // runc (criu >= 3.15) waits for the status-ready notification and writes its fd itself
  expect(dumpLog()).toContain("rpc: status-ready acknowledged");
  expect(dumpLog()).toMatch(/rpc: dump with .*ps=.*lazy_pages=true/);
  const daemon = async (env: Record<string, string> = {}) => {
    const d = Bun.spawn(
      [
        criu,
        "lazy-pages",
        "--page-server",
        "--address",
        "127.0.0.1",
        "--port",
        String(port),
        "-D",
        img,
        "-W",
        work2,
        "-o",
        "lazy.log",
        "-v4",
      ],
      { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } }
    );
    spawned.push(d);
    await waitUntil(
      "the lazy-pages socket",
      () => existsSync(join(work2, "lazy-pages.socket")) || d.exitCode !== null,
      30000
    );
    expect(d.exitCode).toBeNull();
    return d;
  };
  const restore = () =>
    runcPiped(["--criu", criu, "restore", "-d", "--image-path", img, "--work-path", work2, "--lazy-pages", id2], b);
  return { id, id2, ck, work, work2, rootTmp, count, dumpLog, daemon, restore };
}

test.skipIf(!runc || !busybox || !built)(
  "runc lazy migration: checkpoint --lazy-pages --page-server --status-fd serves the frozen container's memory (runc's status fd gets its byte), `criu lazy-pages` and restore --lazy-pages bring it back: the shell's 2 MB of memory checks out by its own md5 and it counts on; the source is gone",
  async () => {
    const m = await lazyMigration("a", 300000);
    const frozenAt = m.count(); // the source is frozen meanwhile
    const daemon = await m.daemon();
    const rs = m.restore();
    expect(`${await rs.p.exited} ${rs.err.text}`, logOf(m.work2, "restore.log")).toBe("0 ");
    expect(await m.ck.exited, `${await new Response(m.ck.stderr).text()}\n${logOf(m.work, "dump.log")}`).toBe(0);
    expect(await daemon.exited, logOf(m.work2, "lazy.log")).toBe(0);
    expect(readFileSync(join(m.work2, "restore.log"), "utf8")).toContain(
      "lazy pages: all memory of the restored tree is in"
    );
    expect(m.dumpLog()).toMatch(/lazy pages: the restore has its memory \((\d+) of \1 /);
    // the source container is gone, the new one runs on from where the source stopped
    expect(state(m.id)).toBeUndefined();
    expect(state(m.id2)?.status).toBe("running");
    await waitUntil("the restored shell to count", () => m.count() > frozenAt + 3, 20000);
    writeFileSync(join(m.rootTmp, "go"), "");
    await waitUntil("the restored shell's verdict", () => existsSync(join(m.rootTmp, "verdict")), 20000);
    expect(readFileSync(join(m.rootTmp, "verdict"), "utf8").trim()).toBe("PASS");
    runcOk(["kill", m.id2, "KILL"]);
    await waitUntil("the container to stop", () => state(m.id2)?.status === "stopped", 10000);
    runcOk(["delete", m.id2]);
  },
  120000
);

test.skipIf(!runc || !busybox || !built)(
  "runc lazy migration whose lazy-pages daemon dies mid-way: runc restore fails (criu-bun replies only once every page is in) and leaves no container or process; the source resumes and its memory checks out",
  async () => {
    // 20 MB streamed at 2 MiB/s: the daemon is killed while pages are still on their way
    const m = await lazyMigration("k", 2500000);
    const frozenAt = m.count();
    const daemon = await m.daemon({ CRIU_BUN_LAZY_RATE: "2" });
    const rs = m.restore();
    const restoreLog = () => {
      try {
        return readFileSync(join(m.work2, "restore.log"), "utf8");
      } catch {
        return "";
      }
    };
    // the copy runs (the frozen source does not count) while its pages still stream in
    await waitUntil("the restored shell to count", () => m.count() > frozenAt || rs.p.exitCode !== null, 30000);
    expect(rs.p.exitCode).toBeNull();
    expect(restoreLog()).toContain("handed to the daemon");
    daemon.kill("SIGKILL");
    expect(await rs.p.exited).not.toBe(0);
    expect(restoreLog()).toMatch(
      /Error \(restore\): the lazy-pages daemon went away before the restored memory was all in; the restored tree \(root \d+, \d+ process\(es\)\) was killed/
    );
    expect(state(m.id2)).toBeUndefined();
    // no process of the copy left: the only shell counting into the rootfs is the source's
    expect(await m.ck.exited).not.toBe(0);
    expect(state(m.id)?.status).toBe("running");
    const c1 = m.count();
    await waitUntil("the source to count on", () => m.count() > c1 + 3, 20000);
    writeFileSync(join(m.rootTmp, "go"), "");
    await waitUntil("the source's verdict", () => existsSync(join(m.rootTmp, "verdict")), 20000);
    expect(readFileSync(join(m.rootTmp, "verdict"), "utf8").trim()).toBe("PASS");
    runcOk(["kill", m.id, "KILL"]);
    await waitUntil("the container to stop", () => state(m.id)?.status === "stopped", 10000);
    runcOk(["delete", m.id]);
  },
  120000
);

test.skipIf(!runc || !busybox || !built)(
  "runc checkpoint --pre-dump, then --leave-running; restored in the foreground under a new name: new cgroups (cg_root), runc's own child (rst_sibling)",
  async () => {
    const criu = installAsCriu();
    const b = bundle(COUNTER, "counter2");
    const id = `criu-bun-p-${process.pid}`,
      id2 = `criu-bun-q-${process.pid}`;
    containers.push(id, id2);
    const run = runcPiped(["run", "-d", id], b);
    expect(await run.p.exited).toBe(0);
    await waitUntil("the container to count", () => last(run.out.text) >= 5, 20000);

    const pre = join(tmp, "pre"),
      img = join(tmp, "img-p");
    const pd = Bun.spawnSync(
      ["runc", "--criu", criu, "checkpoint", "--pre-dump", "--image-path", pre, "--work-path", pre, id],
      { stdout: "pipe", stderr: "pipe", timeout: 90000 }
    );
    expect(`${pd.exitCode} ${pd.stderr}`, logOf(pre, "dump.log")).toBe("0 ");
    expect(state(id)?.status).toBe("running");
    const lo = last(run.out.text);
    const ck = Bun.spawnSync(
      [
        "runc",
        "--criu",
        criu,
        "checkpoint",
        "--leave-running",
        "--parent-path",
        "../pre",
        "--image-path",
        img,
        "--work-path",
        img,
        id,
      ],
      { stdout: "pipe", stderr: "pipe", timeout: 90000 }
    );
    expect(`${ck.exitCode} ${ck.stderr}`, logOf(img, "dump.log")).toBe("0 ");
    // the dump was taken before this: the counter's file (written before each tick is printed) is at
    // least where the dump saw it (the stream read here lags while spawnSync blocks)
    // (`echo $i > /tmp/count` truncates before it writes: an empty read is retried, a later value
    // is still at least the dump's)
    const hi = await waitFor(
      () => Number(readFileSync(join(b, "rootfs/tmp/count"), "utf8").trim()) || undefined,
      "the counter's file",
      5000
    );
    // --leave-running: still there and still counting
    expect(state(id)?.status).toBe("running");
    await waitUntil("the container to go on counting", () => last(run.out.text) > hi + 2, 10000);
    // the final dump stored only what changed since the pre-dump (its pagemap points at the parent)
    expect(readFileSync(join(img, "dump.log"), "utf8")).toMatch(/parent_img="\.\.\/pre"/);
    runcOk(["kill", id, "KILL"]);
    await waitUntil("the first container to stop", () => state(id)?.status === "stopped", 10000);
    runcOk(["delete", id]);

    // a foreground restore: runc waits for its child, the restored container's init
    const rs = runcPiped(["--criu", criu, "restore", "--image-path", img, "--work-path", img, id2], b);
    await waitUntil("the restored counter to print", () => ticks(rs.out.text).length >= 5, 30000);
    const after = ticks(rs.out.text);
    expect(after[0]).toBeGreaterThan(lo);
    expect(after[0]).toBeLessThanOrEqual(hi + 1);
    expect(rs.out.text).not.toContain("BAD");
    const st = state(id2)!;
    expect(st.status).toBe("running");
    // its parent is the runc that restored it, not criu-bun (gone by now) nor init
    expect(Number(/^PPid:\s*(\d+)/m.exec(readFileSync(`/proc/${st.pid}/status`, "utf8"))![1])).toBe(rs.p.pid);
    // its cgroups are the new container's (cg_root), not the old one's
    const cg = readFileSync(`/proc/${st.pid}/cgroup`, "utf8");
    expect(cg).toContain(`/${id2}\n`);
    expect(cg).not.toContain(`/${id}\n`);
    runcOk(["kill", id2, "KILL"]);
    // runc restore was waiting for its child: it ends now, with the signal's status
    const code = await Promise.race([rs.p.exited, Bun.sleep(15000).then(() => "timeout")]);
    expect(code).toBe(137);
    await waitUntil("the container to stop", () => state(id2)?.status !== "running", 10000);
    runcOk(["delete", "-f", id2]);
    expect(state(id2)).toBeUndefined();
  },
  120000
);

test.skipIf(!built)(
  "criu-bun restore -d --restore-sibling --inherit-fd fd[N]:pipe:[INO]: the restored shell is our child and writes into the pipe we gave; bad --inherit-fd refused in one line",
  async () => {
    const { wait4Raw } = await import("../src/sys/ptrace");
    const dir = join(tmp, "cli-img");
    mkdirSync(dir);
    // a shell counting into a pipe (stdout and stderr); the pipe's read end is read through cat
    const a = pipe();
    const sh = Bun.spawn(["sh", "-c", 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done'], {
      stdin: "ignore",
      stdout: a[1],
      stderr: a[1],
      detached: true,
    });
    spawned.push(sh);
    closeSync(a[1]);
    const c1 = Bun.spawn(["cat"], { stdin: a[0], stdout: "pipe" });
    spawned.push(c1);
    closeSync(a[0]);
    const out1 = collect(c1.stdout);
    await waitUntil("the shell to count", () => last(out1.text) >= 3, 10000);
    const key = readlinkSync(`/proc/${sh.pid}/fd/1`);
    expect(key).toMatch(/^pipe:\[\d+\]$/);
    const d = criuBun(["dump", "-t", String(sh.pid), "-D", dir, "-o", "dump.log", "-v4"]);
    expect(d.stderr).toBe("");
    expect(d.code).toBe(0);
    await sh.exited;
    await waitUntil("the old pipe to end", () => out1.done, 10000);
    const n = last(out1.text);

    // bad spellings and keys: one line each, nothing restored
    const bad = criuBun(["restore", "-d", "-D", dir, "--inherit-fd", "fd3:pipe:[1]"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe("Error (restore): --inherit-fd 'fd3:pipe:[1]': expected fd[N]:KEY");
    const notPipe = criuBun(["restore", "-d", "-D", dir, "--inherit-fd", "fd[0]:tmp/x"]);
    expect(notPipe.stderr.trim()).toBe(
      "Error (restore): inherit_fd 'tmp/x': only pipes (pipe:[ino]) and external namespaces (their key) can be inherited by criu-bun yet"
    );
    const closed = criuBun(["restore", "-d", "-D", dir, "--inherit-fd", `fd[77]:${key}`]);
    expect(closed.stderr.trim()).toBe(`Error (restore): inherit_fd '${key}': fd 77 is not open in criu-bun`);
    const noDetach = criuBun(["restore", "-D", dir, "--restore-sibling"]);
    expect(noDetach.code).toBe(1);
    expect(noDetach.stderr.split("\n").filter(Boolean)).toHaveLength(1);

    // criu-bun's fd 3 is the write end of a new pipe: it takes the old pipe's place
    const b = pipe();
    const r = Bun.spawnSync(
      [
        ...criuBunCommand(),
        "restore",
        "-d",
        "--restore-sibling",
        "-D",
        dir,
        "-o",
        "restore.log",
        "-v4",
        "--pidfile",
        join(dir, "pid"),
        "--inherit-fd",
        `fd[3]:${key}`,
      ],
      { stdio: ["ignore", "pipe", "pipe", b[1]], timeout: 60000 }
    );
    closeSync(b[1]);
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    const pid = Number(readFileSync(join(dir, "pid"), "utf8"));
    const c2 = Bun.spawn(["cat"], { stdin: b[0], stdout: "pipe" });
    spawned.push(c2);
    closeSync(b[0]);
    const out2 = collect(c2.stdout);
    try {
      // a sibling of criu-bun: our child, as criu's --restore-sibling makes it
      expect(Number(/^PPid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1])).toBe(process.pid);
      await waitUntil("the restored shell to print into the new pipe", () => ticks(out2.text).length >= 3, 10000);
      expect(ticks(out2.text).slice(0, 3)).toEqual([n + 1, n + 2, n + 3]);
      expect(pipesOf(pid).slice(1)).toEqual([
        readlinkSync(`/proc/${c2.pid}/fd/0`),
        readlinkSync(`/proc/${c2.pid}/fd/0`),
      ]);
      expect(readFileSync(join(dir, "restore.log"), "utf8")).toContain(`criu-bun's fd 3 for '${key}'`);
    } finally {
      process.kill(pid, 9);
      // our child: reaped here
      await waitUntil(
        "the restored shell to exit",
        () => wait4Raw(pid, 0x40000000 | 1 /* __WALL|WNOHANG */).r === pid,
        10000
      );
    }
  },
  60000
);

/** receives each console master runc sends to --console-socket (run, then restore) and copies what
 *  the terminal says to a file, one master after the other */
const CONSOLE = `import socket, os, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(2)
f = open(sys.argv[2], "ab", buffering=0)
while True:
    c, _ = s.accept()
    _, fds, _, _ = socket.recv_fds(c, 1024, 1)
    c.close()
    while True:
        try: b = os.read(fds[0], 4096)
        except OSError: break
        if not b: break
        f.write(b)
    os.close(fds[0])
    f.write(b"--- master closed\\n")
`;

test.skipIf(!runc || !busybox || !built || !Bun.which("python3"))(
  "a container with a terminal (--console-socket): checkpoint, restore -d --console-socket: runc gets the new pty master (orphan-pts-master) and the shell goes on printing on it",
  async () => {
    const criu = installAsCriu();
    const b = bundle(COUNTER, "tty", (c) => {
      c.process.terminal = true;
    });
    const id = `criu-bun-t-${process.pid}`;
    containers.push(id);
    const sock = join(tmp, "console.sock"),
      out = join(tmp, "console.out");
    writeFileSync(join(tmp, "console.py"), CONSOLE);
    const rcv = Bun.spawn(["python3", join(tmp, "console.py"), sock, out], { stdout: "ignore", stderr: "inherit" });
    spawned.push(rcv);
    await waitUntil("the console socket", () => existsSync(sock), 10000);
    runcOk(["run", "-d", "--console-socket", sock, id], b);
    const text = () => {
      try {
        return readFileSync(out, "utf8").replace(/\r/g, "");
      } catch {
        return "";
      }
    };
    await waitUntil("the container to print on its terminal", () => last(text()) >= 3, 20000);
    const pid = state(id)!.pid;
    expect(readlinkSync(`/proc/${pid}/fd/1`)).toMatch(/^\/dev\/pts\/\d+$/);
    const img = join(tmp, "img-t");
    checkpoint(criu, id, img);
    expect(state(id)).toBeUndefined();
    // the old master reads the last of the old terminal's output, then its slave side is gone
    await waitUntil("the old master to close", () => text().includes("--- master closed"), 10000);
    const before = text().split("--- master closed")[0];
    expect(before).not.toContain("BAD");
    const n = last(before);
    const rs = Bun.spawnSync(
      ["runc", "--criu", criu, "restore", "-d", "--console-socket", sock, "--image-path", img, "--work-path", img, id],
      { cwd: b, stdout: "pipe", stderr: "pipe", timeout: 90000 }
    );
    expect(`${rs.exitCode} ${rs.stderr}`, logOf(img, "restore.log")).toBe("0 ");
    expect(readFileSync(join(img, "restore.log"), "utf8")).toContain("rpc: orphan-pts-master acknowledged");
    const after = () => text().split("--- master closed\n")[1] ?? "";
    await waitUntil("the restored shell to print on the new terminal", () => ticks(after()).length >= 3, 20000);
    expect(ticks(after()).slice(0, 3)).toEqual([n + 1, n + 2, n + 3]);
    expect(after()).not.toContain("BAD");
    const st = state(id)!;
    expect(st.status).toBe("running");
    expect(readlinkSync(`/proc/${st.pid}/fd/0`)).toMatch(/^\/dev\/pts\/\d+$/);
    runcOk(["delete", "-f", id]);
    // without a caller to take the new master (the command line), the same images are refused, one line
    const cli = criuBun(["restore", "-d", "-D", img]);
    expect(cli.code).toBe(1);
    expect(cli.stderr.trim()).toMatch(
      /^Error \(restore\): \/dev\/pts\/\d+: its master was outside the dumped tree; restoring it needs a caller that takes the new master \(orphan_pts_master over RPC\)$/
    );
  },
  120000
);

/** a TCP counter of a network namespace (/proc/net/snmp, "Tcp:" lines) */
function tcpCounter(ns: string, name: string): number {
  const r = Bun.spawnSync(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"], { stdout: "pipe" });
  const lines = r.stdout
    .toString()
    .split("\n")
    .filter((l) => l.startsWith("Tcp:"));
  const keys = lines[0].split(/\s+/),
    vals = lines[1].split(/\s+/);
  return Number(vals[keys.indexOf(name)]);
}
function ipOk(args: string[]) {
  const r = Bun.spawnSync(["ip", ...args], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr}`);
}

test.skipIf(!runc || !busybox || !built || !Bun.which("python3") || !Bun.which("ip"))(
  "--tcp-established, the container in an external network namespace (config.json names /run/netns/X): a client outside keeps its connection across runc checkpoint / runc restore, no RST",
  async () => {
    const criu = installAsCriu();
    const tag = process.pid % 100000;
    // the container's namespace and the client's, joined by a veth pair
    const ctr = `cbr-ctr-${tag}`,
      cli = `cbr-cli-${tag}`;
    for (const ns of [ctr, cli]) {
      Bun.spawnSync(["ip", "netns", "del", ns], { stderr: "ignore" });
      ipOk(["netns", "add", ns]);
      netnses.push(ns);
      ipOk(["-n", ns, "link", "set", "lo", "up"]);
    }
    const addr = "10.231.19.2",
      port = 7130;
    ipOk(["-n", cli, "link", "add", "vc", "type", "veth", "peer", "name", "vs", "netns", ctr]);
    ipOk(["-n", cli, "addr", "add", "10.231.19.1/24", "dev", "vc"]);
    ipOk(["-n", ctr, "addr", "add", `${addr}/24`, "dev", "vs"]);
    ipOk(["-n", ctr, "link", "set", "vs", "up"]);
    ipOk(["-n", cli, "link", "set", "vc", "up"]);
    // an echo server in busybox: nc listens (-ll: one cat per connection, cat echoes)
    const b = bundle(["nc", "-ll", "-p", String(port), "-e", "cat"], "tcpnet", (c) => {
      c.linux.namespaces = c.linux.namespaces.map((n: any) =>
        n.type === "network" ? { type: "network", path: `/run/netns/${ctr}` } : n
      );
    });
    const id = `criu-bun-n-${process.pid}`;
    containers.push(id);
    const run = runcPiped(["run", "-d", id], b);
    expect(await run.p.exited).toBe(0);
    const pid0 = state(id)!.pid;
    const listening = () =>
      ["tcp", "tcp6"].some((f) =>
        readFileSync(`/proc/${pid0}/net/${f}`, "utf8")
          .split("\n")
          .some((l) => l.includes(`:${port.toString(16).toUpperCase()} `) && / 0A /.test(l))
      );
    await waitUntil("the container to listen", listening, 10000);

    // the client (test/tcp_client.py, never dumped) streams a pattern and checks every byte it gets back
    const work = join(tmp, "tcpnet-client");
    mkdirSync(work);
    const client = Bun.spawn(
      [
        "ip",
        "netns",
        "exec",
        cli,
        "python3",
        join(REPO_ROOT, "test", "tcp_client.py"),
        addr,
        String(port),
        "7",
        work,
        "c",
      ],
      { stdin: "ignore", stdout: "ignore", stderr: Bun.file(join(work, "c.stderr")) }
    );
    spawned.push(client);
    const txt = (f: string) => {
      try {
        return readFileSync(join(work, f), "utf8");
      } catch {
        return "";
      }
    };
    const recvd = () => Number(txt("c.progress").trim().split(" ")[1] ?? 0);
    const failed = () => {
      const r = txt("c.result");
      if (r && !r.startsWith("PASS")) throw new Error(`client: ${r} ${txt("c.stderr")}`);
      return false;
    };
    await waitUntil("the client to get 200 KB back", () => failed() || recvd() >= 200_000, 20000);
    const rsts = tcpCounter(ctr, "OutRsts"),
      resets = tcpCounter(cli, "EstabResets");

    const img = join(tmp, "img-n");
    const ck = Bun.spawnSync(
      ["runc", "--criu", criu, "checkpoint", "--tcp-established", "--image-path", img, "--work-path", img, id],
      { stdout: "pipe", stderr: "pipe", timeout: 90000 }
    );
    expect(`${ck.exitCode} ${ck.stderr}`, logOf(img, "dump.log")).toBe("0 ");
    expect(state(id)).toBeUndefined();
    const dumpLog = readFileSync(join(img, "dump.log"), "utf8");
    // runc named the namespace external (its inode, key extRootNetNS); criu-bun saved only the key
    expect(dumpLog).toMatch(new RegExp(`external=\\["net\\[${statSync(`/run/netns/${ctr}`).ino}\\]:extRootNetNS"\\]`));
    expect(dumpLog).toContain("is external (key extRootNetNS): not saved");
    // the connection, with its queued data, and the listener
    const streams = readdirSync(img).filter((f) => /^tcp-stream-[0-9a-f]+\.img$/.test(f));
    expect(streams).toHaveLength(1);
    expect(dumpLog).toMatch(new RegExp(`Network locked for tcp port ${port} <-> \\d+`));
    const at = recvd();

    // restored at once (a client's retransmission timer backs off while the connection is locked)
    const rs = runcPiped(
      ["--criu", criu, "restore", "-d", "--tcp-established", "--image-path", img, "--work-path", img, id],
      b
    );
    const rc = await rs.p.exited;
    expect(`${rc} ${rs.err.text}`, logOf(img, "restore.log")).toBe("0 ");
    const st = state(id)!;
    expect(st.status).toBe("running");
    // back in the same namespace: the one config.json names, which runc gave as inherit_fd extRootNetNS
    expect(statSync(`/proc/${st.pid}/ns/net`).ino).toBe(statSync(`/run/netns/${ctr}`).ino);
    expect(readFileSync(join(img, "restore.log"), "utf8")).toContain(
      "joined the external network namespace given for extRootNetNS"
    );
    // the client goes on: 300 KB more echoed, then it stops sending and gets every byte back
    await waitUntil("the client to get 300 KB more", () => failed() || recvd() >= at + 300_000, 40000);
    writeFileSync(join(work, "stop"), "");
    await waitUntil("the client's result", () => txt("c.result") !== "", 60000);
    expect(txt("c.result")).toStartWith("PASS");
    // no reset either way
    expect(tcpCounter(ctr, "OutRsts")).toBe(rsts);
    expect(tcpCounter(cli, "EstabResets")).toBe(resets);
    runcOk(["delete", "-f", id]);
    expect(state(id)).toBeUndefined();
    for (const ns of [ctr, cli]) ipOk(["netns", "del", ns]);
    netnses.length = 0;
  },
  120000
);

/** the children of a process (host pids), from its main thread's children list */
function kidsOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
const statOf = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/stat`, "latin1").replace(/^.*\) /s, "")[0];
  } catch {
    return "gone";
  }
};
/** a process's pid in its own PID namespace (the last of NSpid) */
const nsPid = (pid: number) => Number(/^NSpid:.*\s(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);

test.skipIf(!runc || !busybox || !built)(
  "a container whose init has 8 threads (the workload threads, built static): runc checkpoint ends, runc restore -d brings back all 9 tasks and each thread checks itself",
  async () => {
    const criu = installAsCriu();
    const b = bundle(["/bin/threads", "/w", "8"], "threads");
    mkdirSync(join(b, "rootfs/w"));
    const cc = Bun.spawnSync(
      [
        "gcc",
        "-O2",
        "-static",
        "-pthread",
        "-o",
        join(b, "rootfs/bin/threads"),
        join(REPO_ROOT, "test/workloads/threads.c"),
      ],
      { stdout: "pipe", stderr: "pipe" }
    );
    expect(cc.exitCode, cc.stderr.toString()).toBe(0);
    const id = `criu-bun-mt-${process.pid}`;
    containers.push(id);
    const run = runcPiped(["run", "-d", id], b);
    expect(await run.p.exited).toBe(0);
    await waitUntil("the threads to be ready", () => existsSync(join(b, "rootfs/w/ready")), 10000);
    const pid0 = state(id)!.pid;
    expect(readdirSync(`/proc/${pid0}/task`)).toHaveLength(9);
    const img = join(tmp, "img-mt");
    checkpoint(criu, id, img, 30000);
    expect(state(id)).toBeUndefined();
    const rs = runcPiped(["--criu", criu, "restore", "-d", "--image-path", img, "--work-path", img, id], b);
    const rc = await rs.p.exited;
    expect(`${rc} ${rs.err.text}`, logOf(img, "restore.log")).toBe("0 ");
    const st = state(id)!;
    expect(st.status).toBe("running");
    expect(readdirSync(`/proc/${st.pid}/task`)).toHaveLength(9);
    writeFileSync(join(b, "rootfs/w/go"), "go\n");
    await waitUntil("the restored threads' result", () => existsSync(join(b, "rootfs/w/result")), 15000);
    expect(readFileSync(join(b, "rootfs/w/result"), "utf8")).toStartWith("PASS");
    runcOk(["delete", "-f", id]);
    expect(state(id)).toBeUndefined();
  },
  60000
);

test.skipIf(!runc || !busybox || !built)(
  "a container holding a SIGSTOPped child: runc checkpoint (freeze_cgroup) ends, the child seized after the thaw; restored, the child is still stopped with its pid, and the shell counts on",
  async () => {
    const criu = installAsCriu();
    const b = bundle(["sh", "-c", `sleep 100000 & echo $! > /tmp/child; kill -STOP $!; ${COUNTER[2]}`], "stopped");
    const id = `criu-bun-s-${process.pid}`;
    containers.push(id);
    const run = runcPiped(["run", "-d", id], b);
    expect(await run.p.exited).toBe(0);
    await waitUntil("the container to count", () => last(run.out.text) >= 3, 20000);
    const inNs = Number(readFileSync(join(b, "rootfs/tmp/child"), "utf8"));
    const stopped = (init: number) => kidsOf(init).filter((k) => statOf(k) === "T");
    const before = stopped(state(id)!.pid);
    expect(before).toHaveLength(1);
    expect(nsPid(before[0])).toBe(inNs);
    // (busybox runs its applets through /proc/self/exe: the child may be named "exe")
    const comm = readFileSync(`/proc/${before[0]}/comm`, "utf8");
    const img = join(tmp, "img-s");
    expect(checkpoint(criu, id, img, 30000)).toBeLessThan(20000);
    expect(state(id)).toBeUndefined();
    // runc named the container's cgroup to freeze; the stopped child was seized after the thaw
    const dumpLog = readFileSync(join(img, "dump.log"), "utf8");
    expect(dumpLog).toMatch(/rpc: dump with .*freeze_cgroup=/);
    expect(dumpLog).toMatch(new RegExp(`1 of them stopped \\(seized after the thaw\\): ${before[0]}`));
    await waitUntil("the old stdout pipe to end", () => run.out.done, 10000);
    const n = last(run.out.text);
    expect(run.out.text).not.toContain("BAD");
    const rs = runcPiped(["--criu", criu, "restore", "-d", "--image-path", img, "--work-path", img, id], b);
    const rc = await rs.p.exited;
    expect(`${rc} ${rs.err.text}`, logOf(img, "restore.log")).toBe("0 ");
    const st = state(id)!;
    expect(st.status).toBe("running");
    // the child: stopped still, the same pid in the container's namespace, the same name
    const after = stopped(st.pid);
    expect(after).toHaveLength(1);
    expect(nsPid(after[0])).toBe(inNs);
    expect(readFileSync(`/proc/${after[0]}/comm`, "utf8")).toBe(comm);
    // the container works: the shell goes on from n+1, its state intact
    await waitUntil("the restored counter to print", () => ticks(rs.out.text).length >= 3, 20000);
    expect(ticks(rs.out.text).slice(0, 3)).toEqual([n + 1, n + 2, n + 3]);
    expect(rs.out.text).not.toContain("BAD");
    expect(statOf(after[0])).toBe("T");
    // and the child goes on when continued
    process.kill(after[0], "SIGCONT");
    await waitUntil("the child to run again", () => statOf(after[0]) === "S", 5000);
    runcOk(["delete", "-f", id]);
    expect(state(id)).toBeUndefined();
  },
  60000
);
