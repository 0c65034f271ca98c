// criu's RPC as runc, crun and Podman speak it: a real `criu-bun swrk <fd>` process and a client
// written here, on a SOCK_SEQPACKET socketpair, with criu-bun's rpc.proto schema (field numbers
// are criu's). Every request type, the notifications of a real dump and restore in criu 4.2's
// order (observed with criu 4.2 over RPC: pre-dump, query-ext-files, post-dump; pre-restore,
// post-restore with the pid, pre-resume, post-resume), and malformed requests answered with
// success=false and a message, never a crash or a hang. RESTORE's runc fields (rst_sibling,
// inherit_fd, cg_root) are driven here too, checked on the restored process.
import { afterAll, afterEach, expect, test } from "bun:test";
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  readSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
  constants as C,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { create, fromBinary, isFieldSet, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  criu_featuresSchema,
  criu_reqSchema,
  criu_respSchema,
  criu_req_type as T,
  type criu_resp,
} from "../src/images/gen/rpc_pb";
import { recvPacket, sendPacket } from "../src/sys/seqpacket";
import { socketPair, AF, SOCK } from "../src/sys/sock";
import { syscall, addr } from "../src/sys/syscall";
import { NR } from "../src/sys/nr";
import {
  criuBun,
  criuBunCommand,
  REPO_ROOT,
  startWorkload,
  trigger,
  waitResult,
  cleanup,
  isAlive,
  procState,
  waitUntil,
  killWorkload,
} from "./harness";
import { imagesDir, cleanupImages, waitReaped } from "./engine-helpers";

afterAll(() => {
  cleanup();
  cleanupImages();
});

/** A caller of `criu-bun swrk`: the socket, the worker process, requests and answers. */
class Client {
  constructor(
    readonly fd: number,
    readonly proc: Subprocess
  ) {}
  /** extra: fds of ours the worker gets at the given numbers (as runc's ExtraFiles for inherit_fd) */
  static start(fdNumber = 3, extra: Record<number, number> = {}): Client {
    const [mine, theirs] = socketPair(AF.UNIX, SOCK.SEQPACKET);
    // the worker gets its end at fd N (runc uses 3, its version probe other numbers)
    const stdio: any[] = ["ignore", "ignore", "pipe"];
    const top = Math.max(fdNumber, ...Object.keys(extra).map(Number));
    while (stdio.length <= top) stdio.push("ignore");
    stdio[fdNumber] = theirs;
    for (const [n, f] of Object.entries(extra)) stdio[Number(n)] = f;
    const proc = Bun.spawn([...criuBunCommand(), "swrk", String(fdNumber)], { cwd: REPO_ROOT, stdio: stdio as any });
    closeSync(theirs);
    const c = new Client(mine, proc);
    clients.push(c);
    return c;
  }
  sendRaw(bytes: Uint8Array) {
    sendPacket(this.fd, bytes);
  }
  send(req: MessageInitShape<typeof criu_reqSchema>) {
    this.sendRaw(toBinary(criu_reqSchema, create(criu_reqSchema, req)));
  }
  /** the next reply, within ms; its fds (SCM_RIGHTS) too */
  recv(ms = 30000): { resp: criu_resp; fds: number[]; size: number } {
    const pfd = new Int16Array(4); // struct pollfd { int fd; short events; short revents }
    new Int32Array(pfd.buffer, 0, 1)[0] = this.fd;
    pfd[2] = 1; // POLLIN
    const r = syscall(NR.poll, addr(pfd), 1, ms);
    if (r <= 0) throw new Error(`no reply from criu-bun swrk within ${ms} ms`);
    const p = recvPacket(this.fd, 10 * 4096);
    if (!p.data.length) throw new Error("criu-bun swrk closed the connection");
    expect(p.truncated).toBe(false); // runc's buffer: 10 x 4096 bytes
    return { resp: fromBinary(criu_respSchema, p.data), fds: p.fds, size: p.data.length };
  }
  call(req: MessageInitShape<typeof criu_reqSchema>) {
    this.send(req);
    const { resp, size } = this.recv();
    return Object.assign(resp, { size });
  }
  /** answer every notification with notify_success (or refuse ACTION); the final reply and the notifications seen */
  serveNotifications(refuse?: string, onNotify?: (script: string, pid: number | undefined, fds: number[]) => void) {
    const seen: { script: string; pid?: number }[] = [];
    for (;;) {
      const { resp, fds } = this.recv();
      if (resp.type !== T.NOTIFY) return { resp, seen };
      expect(resp.success).toBe(true);
      const script = resp.notify!.script,
        pid = resp.notify!.pid || undefined;
      seen.push(pid ? { script, pid } : { script });
      onNotify?.(script, pid, fds);
      for (const f of fds) closeSync(f);
      this.send({ type: T.NOTIFY, notifySuccess: script !== refuse });
    }
  }
  /** close our end: the worker must exit 0 */
  async close(): Promise<number> {
    closeSync(this.fd);
    const code = await Promise.race([this.proc.exited, Bun.sleep(10000).then(() => -1)]);
    return code;
  }
}
const clients: Client[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) {
    try {
      closeSync(c.fd);
    } catch {}
    try {
      c.proc.kill(9);
    } catch {}
  }
});

/** a directory open in this process, as runc passes images_dir_fd / work_dir_fd */
function dirFd(dir: string): number {
  return openSync(dir, C.O_RDONLY | C.O_DIRECTORY);
}

test("VERSION: criu 4.2's level with criu-bun's own version in gitid; runc and Podman accept it; the worker exits 0 on close", async () => {
  const versionOut = Bun.spawnSync([...criuBunCommand(), "--version"], { stdout: "pipe" }).stdout.toString();
  for (const n of [3, 9]) {
    const c = Client.start(n);
    const r = c.call({ type: T.VERSION });
    expect(r.type).toBe(T.VERSION);
    expect(r.success).toBe(true);
    const v = r.version!;
    expect([v.majorNumber, v.minorNumber]).toEqual([4, 2]);
    expect(v.gitid).toStartWith("criu_bun ");
    // one string: the gitid here is the GitID line of `criu-bun --version`
    expect(`GitID: ${v.gitid}\n`).toBe(versionOut.split("\n")[1] + "\n");
    // runc: major*10000 + minor*100 + sublevel, one minor more with a gitid
    const runcLevel = v.majorNumber * 10000 + v.minorNumber * 100 + (v.sublevel ?? 0) + (v.gitid ? 100 : 0);
    expect(runcLevel).toBeGreaterThanOrEqual(31600); // Podman 31100, containerd and CRI-O 31600
    expect(await c.close()).toBe(0);
  }
});

test("FEATURE_CHECK answers what was asked, truthfully; CHECK passes; several requests on one connection", async () => {
  const c = Client.start();
  let r = c.call({ type: T.FEATURE_CHECK, features: { memTrack: true } });
  expect(r.success).toBe(true);
  expect(r.features!.memTrack).toBe(true); // pre-dump + parent_img compares pages, no soft-dirty needed
  expect(isFieldSet(r.features!, criu_featuresSchema.field.lazyPages)).toBe(false); // not asked
  expect(r.size).toBeLessThan(40);
  r = c.call({ type: T.FEATURE_CHECK, features: { lazyPages: true, memTrack: false } });
  // what `check --feature lazy_pages` finds: a lazy dump and restore work over RPC where it passes
  const lazyCheck = criuBun(["check", "--feature", "lazy_pages"]);
  expect(r.features!.lazyPages).toBe(lazyCheck.code === 0);
  expect(r.features!.lazyPages).toBe(true); // userfaultfd on every kernel these tests run on
  expect(r.features!.memTrack).toBe(true);
  r = c.call({ type: T.CHECK });
  expect(r.type).toBe(T.CHECK);
  expect(r.success).toBe(true);
  expect(await c.close()).toBe(0);
});

test("every other request type is answered: success=false with a clear message where criu-bun does not serve it", async () => {
  const c = Client.start();
  for (const [type, want] of [
    [T.PAGE_SERVER, /page server/],
    [T.PAGE_SERVER_CHLD, /page server/],
    [T.CPUINFO_DUMP, /not supported/],
    [T.CPUINFO_CHECK, /not supported/],
    [T.NOTIFY, /no notification/],
    [T.WAIT_PID, /no pid/],
    [T.EMPTY, /unknown request type 0/],
  ] as const) {
    const r = c.call({ type, ...(type === T.WAIT_PID ? {} : {}) });
    expect(r.type).toBe(type);
    expect(r.success).toBe(false);
    expect(r.crErrmsg).toMatch(want);
  }
  const w = c.call({ type: T.WAIT_PID, pid: process.pid });
  expect(w.success).toBe(false);
  expect(w.crErrmsg).toContain("not a child of criu-bun");
  expect(w.crErrno).toBe(10); // ECHILD
  expect(await c.close()).toBe(0);
});

test("malformed requests: bad protobuf, unknown type, missing pid, fds that are not directories, unsupported options", async () => {
  const c = Client.start();
  const dir = imagesDir("swrk-bad");
  c.sendRaw(new Uint8Array([0xff, 0xff, 0xff, 0x01]));
  let r = c.recv().resp;
  expect(r.success).toBe(false);
  expect(r.crErrmsg).toContain("cannot decode the request");
  c.sendRaw(new Uint8Array([0x08, 0x63])); // type = 99
  r = c.recv().resp;
  expect(r.success).toBe(false);
  expect(r.crErrmsg).toMatch(/unknown request type/);
  const d = dirFd(dir);
  try {
    r = c.call({ type: T.DUMP, opts: { imagesDirFd: d } });
    expect(r.success).toBe(false);
    expect(r.crErrmsg).toContain("no pid to dump");
    r = c.call({ type: T.DUMP });
    expect(r.success).toBe(false);
    expect(r.crErrmsg).toContain("without opts");
    const f = openSync(join(REPO_ROOT, "package.json"), "r");
    r = c.call({ type: T.RESTORE, opts: { imagesDirFd: f } });
    closeSync(f);
    expect(r.success).toBe(false);
    expect(r.crErrmsg).toMatch(/images_dir_fd \d+ of the caller \(pid \d+\) is not a directory/);
    r = c.call({ type: T.DUMP, opts: { imagesDirFd: 999, pid: 1 } });
    expect(r.crErrmsg).toMatch(/images_dir_fd 999 is not an open fd of the caller/);
    r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, workDirFd: 998, pid: 1 } });
    expect(r.crErrmsg).toMatch(/work_dir_fd 998 is not an open fd/);
    r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, pid: 1, lazyPages: true } });
    expect(r.crErrmsg).toBe("lazy_pages: the dump serves the memory on ps.port, which is not set");
    r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, pid: 1, logFile: "../x.log" } });
    expect(r.crErrmsg).toContain("must be a name in the work dir");
    r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, pid: 999999999 } });
    expect(r.success).toBe(false);
    expect(r.crErrmsg).toMatch(/999999999/);
  } finally {
    closeSync(d);
  }
  // still serving after all that
  expect(c.call({ type: T.VERSION }).success).toBe(true);
  expect(await c.close()).toBe(0);
});

test("DUMP with lazy_pages, ps and status_fd (an older caller's readiness fd): criu's byte once the memory is served; a lazy-pages daemon that hangs up at once: the reply is the failure and the tree runs on, its state intact", async () => {
  const w = await startWorkload("counter");
  const dir = imagesDir("swrk-lazy");
  const d = dirFd(dir);
  const statusFile = join(dir, "..", `${dir.split("/").at(-1)}.status`);
  const sfd = openSync(statusFile, "w", 0o600);
  const srv = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = srv.port;
  srv.stop(true);
  try {
    const c = Client.start();
    c.send({
      type: T.DUMP,
      opts: {
        imagesDirFd: d,
        pid: w.pid,
        lazyPages: true,
        ps: { address: "127.0.0.1", port },
        statusFd: sfd,
        logLevel: 4,
        logFile: "dump.log",
      },
    });
    await waitUntil("criu's byte on status_fd", () => statSync(statusFile).size > 0, 30000);
    expect([...readFileSync(statusFile)]).toEqual([0]);
    expect(readFileSync(join(dir, "dump.log"), "utf8")).toMatch(/rpc: dump with .*ps=.*lazy_pages=true.*status_fd=/);
    // a "daemon" that connects and hangs up: the memory was not all taken
    await new Promise<void>((res, rej) => {
      Bun.connect({
        hostname: "127.0.0.1",
        port,
        socket: {
          open(s) {
            s.end();
            res();
          },
          data() {},
          error(_s, e) {
            rej(e);
          },
        },
      }).catch(rej);
    });
    const r = c.recv().resp;
    expect(r.type).toBe(T.DUMP);
    expect(r.success).toBe(false);
    expect(isAlive(w.pid)).toBe(true);
    expect(procState(w.pid)).not.toBe("T");
    expect(readFileSync(join(dir, "dump.log"), "utf8")).toContain(
      `Tree of ${w.pid} resumed: its lazy pages were not all taken`
    );
    expect(await c.close()).toBe(0);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  } finally {
    closeSync(d);
    closeSync(sfd);
    rmSync(statusFile, { force: true });
    killWorkload(w);
  }
});

test("DUMP and RESTORE of a workload with notifications in criu's order; the log in the work dir; the tree gone when DUMP answers", async () => {
  const w = await startWorkload("counter");
  const dir = imagesDir("swrk");
  const work = mkdtempSync(join(tmpdir(), "criu-bun-swrk-work-"));
  const d = dirFd(dir),
    wd = dirFd(work);
  try {
    let c = Client.start();
    c.send({
      type: T.DUMP,
      opts: { imagesDirFd: d, workDirFd: wd, pid: w.pid, logLevel: 4, logFile: "dump.log", notifyScripts: true },
    });
    let states: (string | null)[] = [];
    const dumped = c.serveNotifications(undefined, () => states.push(procState(w.pid)));
    expect(dumped.resp.type).toBe(T.DUMP);
    expect(dumped.resp.crErrmsg ?? "").toBe("");
    expect(dumped.resp.success).toBe(true);
    expect(dumped.resp.dump?.restored).toBe(false);
    expect(dumped.seen).toEqual([{ script: "pre-dump" }, { script: "query-ext-files" }, { script: "post-dump" }]);
    expect(states[2]).toBe("t"); // frozen until post-dump is answered
    // without leave_running, the reply comes when the tree is gone (runc checks it at once)
    expect(isAlive(w.pid)).toBe(false);
    expect(readFileSync(join(work, "dump.log"), "utf8")).toContain("Dumping finished successfully");
    expect(await c.close()).toBe(0);
    await waitReaped(w.pid);

    c = Client.start();
    c.send({
      type: T.RESTORE,
      opts: { imagesDirFd: d, workDirFd: wd, logLevel: 4, logFile: "restore.log", notifyScripts: true },
    });
    states = [];
    const restored = c.serveNotifications(undefined, (s, pid) => {
      if (s === "post-restore") states.push(procState(pid!));
    });
    expect(restored.resp.success).toBe(true);
    expect(restored.resp.restore?.pid).toBe(w.pid);
    expect(restored.seen).toEqual([
      { script: "pre-restore" },
      { script: "post-restore", pid: w.pid },
      { script: "pre-resume" },
      { script: "post-resume" },
    ]);
    expect(states).toEqual(["t"]); // restored, not running yet
    expect(readFileSync(join(work, "restore.log"), "utf8")).toContain("Restore finished successfully");
    expect(await c.close()).toBe(0);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  } finally {
    closeSync(d);
    closeSync(wd);
    rmSync(work, { recursive: true, force: true });
  }
}, 60000);

// reg's remap-fpath.img (ghost and link-remapped files) was read once per images directory name and
// kept for the life of the process; every restore names its images by the fd it holds on them
// (/proc/self/fd/N, the same N each time), so a second RESTORE of one swrk session took the first
// one's deleted files: here the deleted file would be looked for at its old name (gone) and the
// restore failed, or a file made since at that name would have been opened in its place
test("several RESTOREs in one session are independent: deleted files (ghosts) of one images directory are not another's", async () => {
  const ws = [await startWorkload("counter"), await startWorkload("deleted"), await startWorkload("files")];
  const dirs = ws.map((w, i) => {
    const dir = imagesDir(`swrk-multi${i}`);
    const r = Bun.spawnSync([...criuBunCommand(), "dump", "-t", String(w.pid), "-D", dir], { cwd: REPO_ROOT });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    return dir;
  });
  expect(readdirSync(dirs[1]).some((f) => f.startsWith("ghost-file-"))).toBe(true);
  expect(readdirSync(dirs[0]).some((f) => f.startsWith("ghost-file-"))).toBe(false);
  for (const w of ws) await waitReaped(w.pid);
  const fds = dirs.map(dirFd);
  try {
    const c = Client.start();
    for (const [i, w] of ws.entries()) {
      const r = c.call({ type: T.RESTORE, opts: { imagesDirFd: fds[i] } });
      expect(r.crErrmsg ?? "").toBe("");
      expect(r.success).toBe(true);
      expect(r.restore?.pid).toBe(w.pid);
    }
    for (const w of ws) trigger(w);
    for (const w of ws) expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await c.close()).toBe(0);
  } finally {
    for (const f of fds) closeSync(f);
  }
}, 90000);

test("a refused notification fails the request and the tree keeps running; PRE_DUMP then DUMP with parent_img", async () => {
  const w = await startWorkload("counter");
  const pre = imagesDir("swrk-pre"),
    fin = imagesDir("swrk-fin");
  const pd = dirFd(pre),
    fd = dirFd(fin);
  try {
    const c = Client.start();
    c.send({ type: T.DUMP, opts: { imagesDirFd: fd, pid: w.pid, notifyScripts: true } });
    const refused = c.serveNotifications("post-dump");
    expect(refused.resp.success).toBe(false);
    expect(refused.resp.crErrmsg).toBe("the caller refused post-dump");
    expect(isAlive(w.pid)).toBe(true);
    expect(procState(w.pid)).not.toBe("t");
    // runc --pre-dump: FEATURE_CHECK mem_track, PRE_DUMP, then DUMP with parent_img (relative to the images dir)
    let r = c.call({ type: T.PRE_DUMP, opts: { imagesDirFd: pd, pid: w.pid, trackMem: true } });
    expect(r.success).toBe(true);
    expect(isAlive(w.pid)).toBe(true);
    r = c.call({
      type: T.DUMP,
      opts: {
        imagesDirFd: fd,
        pid: w.pid,
        trackMem: true,
        parentImg: join("..", pre.split("/").pop()!),
        leaveRunning: true,
      },
    });
    expect(r.crErrmsg ?? "").toBe("");
    expect(r.success).toBe(true);
    expect(isAlive(w.pid)).toBe(true);
    expect(await c.close()).toBe(0);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  } finally {
    closeSync(pd);
    closeSync(fd);
  }
}, 60000);

/** cgroup freezers on this machine: v1's freezer hierarchy and v2's cgroup.freeze */
function freezers(): { kind: string; base: string }[] {
  const out: { kind: string; base: string }[] = [];
  if (existsSync("/sys/fs/cgroup/freezer/tasks")) out.push({ kind: "v1", base: "/sys/fs/cgroup/freezer" });
  for (const b of ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]) {
    if (existsSync(join(b, "cgroup.subtree_control")) && existsSync(join(b, "cgroup.procs"))) {
      out.push({ kind: "v2", base: b });
      break;
    }
  }
  return out;
}

test("freeze_cgroup with a SIGSTOPped child in the cgroup: it is seized after the thaw (a frozen stopped task never reaches the trace stop: runc checkpoint hung, CRIU 4.2's too); the dump ends and the child is still stopped", async () => {
  const c = Client.start();
  for (const { kind, base } of freezers()) {
    const cg = join(base, `criu-bun-swrk-stop-${process.pid}-${kind}`);
    mkdirSync(cg);
    const work = mkdtempSync(join(tmpdir(), "criu-bun-swrk-stop-"));
    const sh = Bun.spawn(
      [
        "sh",
        "-c",
        `echo $$ > ${cg}/cgroup.procs; sleep 100000 & echo $! > ${work}/child; kill -STOP $!; while :; do sleep 0.1; done`,
      ],
      { stdin: "ignore", stdout: "ignore", stderr: "ignore", detached: true }
    );
    const dir = imagesDir(`swrk-freeze-stopped-${kind}`);
    const d = dirFd(dir);
    let child = 0;
    try {
      await waitUntil("the child to be stopped", () => {
        child = existsSync(join(work, "child")) ? Number(readFileSync(join(work, "child"), "utf8")) : 0;
        return child > 0 && procState(child) === "T";
      });
      const t0 = performance.now();
      const r = c.call({
        type: T.DUMP,
        opts: { imagesDirFd: d, pid: sh.pid, leaveRunning: true, freezeCgroup: cg, logLevel: 4, logFile: "dump.log" },
      });
      expect(r.crErrmsg ?? "").toBe("");
      expect(r.success).toBe(true);
      expect(performance.now() - t0).toBeLessThan(20000);
      const log = readFileSync(join(dir, "dump.log"), "utf8");
      expect(log).toMatch(new RegExp(`1 of them stopped \\(seized after the thaw\\): ${child}`));
      // left as it was: stopped, untraced
      expect(procState(child)).toBe("T");
      expect(readFileSync(`/proc/${child}/status`, "utf8")).toMatch(/TracerPid:\s*0\n/);
    } finally {
      closeSync(d);
      for (const p of [child, sh.pid])
        try {
          if (p > 0) process.kill(p, 9);
        } catch {}
      await waitUntil("cgroup empty", () => {
        try {
          rmdirSync(cg);
          return true;
        } catch {
          return false;
        }
      });
      rmSync(work, { recursive: true, force: true });
    }
  }
  expect(await c.close()).toBe(0);
}, 60_000);

test("freeze_cgroup: the tree's cgroup (v1 freezer, v2 cgroup.freeze) is frozen while its tasks are seized, then thawed; not a cgroup: refused", async () => {
  const c = Client.start();
  for (const { kind, base } of freezers()) {
    const cg = join(base, `criu-bun-swrk-${process.pid}-${kind}`);
    mkdirSync(cg);
    const w = await startWorkload("counter");
    const dir = imagesDir(`swrk-freeze-${kind}`);
    const d = dirFd(dir);
    try {
      writeFileSync(join(cg, "cgroup.procs"), String(w.pid));
      const r = c.call({
        type: T.DUMP,
        opts: { imagesDirFd: d, pid: w.pid, leaveRunning: true, freezeCgroup: cg, logLevel: 4, logFile: "dump.log" },
      });
      expect(r.crErrmsg ?? "").toBe("");
      expect(r.success).toBe(true);
      const log = readFileSync(join(dir, "dump.log"), "utf8");
      expect(log).toMatch(new RegExp(`cgroup ${cg} frozen with 1 thread\\(s\\)`));
      expect(log).toContain(`cgroup ${cg} thawed`);
      // thawed again, running
      if (kind === "v1") expect(readFileSync(join(cg, "freezer.state"), "utf8").trim()).toBe("THAWED");
      else expect(readFileSync(join(cg, "cgroup.events"), "utf8")).toMatch(/^frozen 0$/m);
      await waitUntil("running again", () => {
        const s = procState(w.pid);
        return s === "R" || s === "S";
      });
      trigger(w);
      expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    } finally {
      closeSync(d);
      try {
        process.kill(w.pid, 9);
      } catch {}
      await waitReaped(w.pid).catch(() => {});
      await waitUntil("cgroup empty", () => {
        try {
          rmdirSync(cg);
          return true;
        } catch {
          return false;
        }
      });
    }
  }
  const d = dirFd(imagesDir("swrk-freeze-bad"));
  const r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, pid: process.pid, freezeCgroup: tmpdir() } });
  closeSync(d);
  expect(r.success).toBe(false);
  expect(r.crErrmsg).toMatch(/freeze_cgroup .* is not a cgroup under \/sys\/fs\/cgroup/);
  expect(await c.close()).toBe(0);
}, 60000);

test("empty_ns net: a tree in a network namespace with interfaces is dumped without them and restored into a new, empty one (the caller fills it)", async () => {
  const w = await startWorkload("counter", [], {
    wrap: [
      "unshare",
      "--net",
      "sh",
      "-c",
      'ip link add criubun0 type veth peer name criubun1 && ip link set lo up && exec "$0" "$@"',
    ],
  });
  const dir = imagesDir("swrk-emptyns");
  const d = dirFd(dir);
  const links = (pid: number) =>
    Bun.spawnSync(["nsenter", "-t", String(pid), "-n", "ip", "-o", "link"]).stdout.toString();
  try {
    expect(links(w.pid)).toContain("criubun0");
    const c = Client.start();
    // without empty_ns the interfaces are refused: criu-bun cannot save them
    let r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, pid: w.pid } });
    expect(r.success).toBe(false);
    expect(r.crErrmsg).toMatch(/own network namespace with interfaces \(.*criubun0/);
    expect(isAlive(w.pid)).toBe(true);
    r = c.call({
      type: T.DUMP,
      opts: { imagesDirFd: d, pid: w.pid, emptyNs: 0x40000000, logLevel: 4, logFile: "dump.log" },
    });
    expect(r.crErrmsg ?? "").toBe("");
    expect(r.success).toBe(true);
    // the worker lives on, yet the killed tree is reaped by its parent (this test): its PIDs are free for RESTORE
    await waitReaped(w.pid);
    c.send({ type: T.RESTORE, opts: { imagesDirFd: d, emptyNs: 0x40000000, notifyScripts: true } });
    let seenLinks = "";
    const restored = c.serveNotifications(undefined, (s, pid) => {
      if (s === "setup-namespaces") seenLinks = links(pid!);
    });
    expect(restored.resp.crErrmsg ?? "").toBe("");
    expect(restored.resp.success).toBe(true);
    expect(restored.seen.map((s) => s.script)).toEqual([
      "pre-restore",
      "setup-namespaces",
      "post-setup-namespaces",
      "post-restore",
      "network-unlock",
      "pre-resume",
      "post-resume",
    ]);
    // at setup-namespaces the caller sees the new namespace: only lo, and down
    expect(seenLinks).not.toContain("criubun0");
    expect(seenLinks).toMatch(/^1: lo: <LOOPBACK>/);
    expect(readFileSync(`/proc/${w.pid}/net/dev`, "utf8")).not.toContain("criubun0");
    expect(await c.close()).toBe(0);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  } finally {
    closeSync(d);
  }
}, 60000);

function pipe(): [number, number] {
  const a = new Int32Array(2);
  if (syscall(NR.pipe2, addr(a), 0o2000000 /* O_CLOEXEC */) !== 0) throw new Error("pipe2 failed");
  return [a[0], a[1]];
}
const ppidOf = (pid: number) => Number(/^PPid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);

test("RESTORE with rst_sibling and inherit_fd pipe:[INO]: the restored root is the caller's child and prints into the caller's new pipe; bad inherit_fd refused in one line, nothing restored", async () => {
  const { wait4Raw } = await import("../src/sys/ptrace");
  // bash with its stdout on a pipe whose read end is ours (outside the tree), as a container's stdio under runc
  const a = pipe();
  const w = await startWorkload("bashloop.sh", [], { stdout: a[1] });
  closeSync(a[1]);
  const key = readlinkSync(`/proc/${w.pid}/fd/1`);
  expect(key).toMatch(/^pipe:\[\d+\]$/);
  const dir = imagesDir("swrk-sibling");
  const d = dirFd(dir);
  const b = pipe();
  let restoredPid = 0;
  try {
    // the worker holds the new pipe's write end at fd 4, as runc hands criu its new stdio
    const c = Client.start(3, { 4: b[1] });
    closeSync(b[1]);
    let r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, pid: w.pid } });
    expect(r.crErrmsg ?? "").toBe("");
    expect(r.success).toBe(true);
    await waitReaped(w.pid);
    // the old pipe: its writer is gone, nothing came through it after the dump
    expect(readSync(a[0], Buffer.alloc(64))).toBe(0);

    // bad keys and fds: one line each, success=false, no process made
    for (const [inheritFd, want] of [
      [
        [{ key: "tmp/x", fd: 4 }],
        "inherit_fd 'tmp/x': only pipes (pipe:[ino]) and external namespaces (their key) can be inherited by criu-bun yet",
      ],
      [[{ key, fd: 77 }], `inherit_fd '${key}': fd 77 is not open in criu-bun`],
    ] as const) {
      r = c.call({ type: T.RESTORE, opts: { imagesDirFd: d, rstSibling: true, inheritFd: inheritFd as any } });
      expect(r.success).toBe(false);
      expect(r.crErrmsg).toBe(want);
      expect(existsSync(`/proc/${w.pid}`)).toBe(false);
    }

    r = c.call({
      type: T.RESTORE,
      opts: { imagesDirFd: d, rstSibling: true, inheritFd: [{ key, fd: 4 }], logLevel: 4, logFile: "restore.log" },
    });
    expect(r.crErrmsg ?? "").toBe("");
    expect(r.success).toBe(true);
    restoredPid = r.restore!.pid;
    expect(restoredPid).toBe(w.pid);
    // rst_sibling: a child of the caller (this process), not of the worker
    expect(ppidOf(w.pid)).toBe(process.pid);
    // stdout is the new pipe (the same one the worker was given), no longer the old one
    const newPipe = `pipe:[${fstatSync(b[0]).ino}]`;
    expect(readlinkSync(`/proc/${w.pid}/fd/1`)).toBe(newPipe);
    expect(newPipe).not.toBe(key);
    expect(readFileSync(join(dir, "restore.log"), "utf8")).toContain(`criu-bun's fd 4 for '${key}'`);
    // the worker exits on close; the restored shell stays our child
    expect(await c.close()).toBe(0);
    expect(ppidOf(w.pid)).toBe(process.pid);
    trigger(w);
    const res = await waitResult(w, 15000);
    expect(res.text).toStartWith("PASS");
    // what it printed on stdout reached the new pipe (written before DIR/result appeared)
    const buf = Buffer.alloc(256);
    expect(buf.subarray(0, readSync(b[0], buf)).toString()).toBe(res.text);
    // ours to reap
    await waitUntil(
      "the restored shell to be reaped by us",
      () => wait4Raw(w.pid, 0x40000000 | 1 /* __WALL|WNOHANG */).r === w.pid,
      10000
    );
    restoredPid = 0;
  } finally {
    closeSync(d);
    closeSync(a[0]);
    closeSync(b[0]);
    if (restoredPid) {
      try {
        process.kill(restoredPid, 9);
      } catch {}
      wait4Raw(restoredPid, 0x40000000);
    }
  }
}, 60000);

test.skipIf(!existsSync("/sys/fs/cgroup/pids/cgroup.procs"))(
  "RESTORE with cg_root (v1 pids): the tree's cgroup is made under the new root and the restored process is in it; a relative root refused in one line, nothing restored",
  async () => {
    const base = "/sys/fs/cgroup/pids";
    const old = `/criu-bun-swrk-${process.pid}-old`,
      neu = `/criu-bun-swrk-${process.pid}-new`;
    mkdirSync(join(base, old));
    const w = await startWorkload("counter");
    const dir = imagesDir("swrk-cgroot");
    const d = dirFd(dir);
    const pidsCg = (pid: number) => /^\d+:pids:(.*)$/m.exec(readFileSync(`/proc/${pid}/cgroup`, "utf8"))?.[1];
    try {
      writeFileSync(join(base, old, "cgroup.procs"), String(w.pid));
      expect(pidsCg(w.pid)).toBe(old);
      const c = Client.start();
      let r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, pid: w.pid } });
      expect(r.crErrmsg ?? "").toBe("");
      expect(r.success).toBe(true);
      await waitReaped(w.pid);

      r = c.call({
        type: T.RESTORE,
        opts: { imagesDirFd: d, manageCgroups: true, cgRoot: [{ ctrl: "pids", path: "criu-bun-relative" }] },
      });
      expect(r.success).toBe(false);
      expect(r.crErrmsg).toBe("cg_root pids:criu-bun-relative: the path must be absolute");
      expect(existsSync(`/proc/${w.pid}`)).toBe(false);
      expect(existsSync(join(base, neu))).toBe(false);

      r = c.call({
        type: T.RESTORE,
        opts: {
          imagesDirFd: d,
          manageCgroups: true,
          cgRoot: [{ ctrl: "pids", path: neu }],
          logLevel: 4,
          logFile: "restore.log",
        },
      });
      expect(r.crErrmsg ?? "").toBe("");
      expect(r.success).toBe(true);
      expect(r.restore!.pid).toBe(w.pid);
      // in the new root, made by the restore; the old one is empty
      expect(pidsCg(w.pid)).toBe(neu);
      expect(readFileSync(join(base, neu, "cgroup.procs"), "utf8").trim()).toBe(String(w.pid));
      expect(readFileSync(join(base, old, "cgroup.procs"), "utf8").trim()).toBe("");
      expect(readFileSync(join(dir, "restore.log"), "utf8")).toContain(
        `cg_root: pids cgroups under ${old} go under ${neu}`
      );
      expect(await c.close()).toBe(0);
      trigger(w);
      expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    } finally {
      closeSync(d);
      killWorkload(w);
      for (const cg of [neu, old]) {
        if (!existsSync(join(base, cg))) continue;
        await waitUntil(
          `cgroup ${cg} empty`,
          () => {
            try {
              rmdirSync(join(base, cg));
              return true;
            } catch {
              return false;
            }
          },
          10000
        );
      }
    }
  },
  60000
);

// The command exec_cmd runs: records its own pid and children, lets the restored workload finish
// and reaps it, as a supervisor would (the same probe as cli-commands' --exec-cmd test).
const EXEC_PROBE = `
import os, sys
out, wl = sys.argv[1], sys.argv[2]
me = os.getpid()
kids = open(f"/proc/{me}/task/{me}/children").read().split()
print("probe: running", flush=True)
open(wl + "/go.tmp", "w").write("go\\n"); os.rename(wl + "/go.tmp", wl + "/go")
pid, st = os.waitpid(int(kids[0]), 0)
open(out, "w").write(f"{me} {' '.join(kids)} {os.waitstatus_to_exitcode(st)}\\n")
`;

test("RESTORE with exec_cmd: the reply, then the worker becomes the command (same pid) with the restored tree as its child and its output in the log; a command that cannot run: the worker exits 1 naming it, the tree left running (as criu's service does)", async () => {
  const work = mkdtempSync(join(tmpdir(), "criu-bun-swrk-exec-"));
  const restored: number[] = [];
  try {
    for (const cmd of ["probe", "missing"] as const) {
      const w = await startWorkload("counter");
      const dir = imagesDir(`swrk-exec-${cmd}`);
      const d = dirFd(dir),
        wd = dirFd(work);
      try {
        const c = Client.start();
        let r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, pid: w.pid } });
        expect(r.crErrmsg ?? "").toBe("");
        expect(r.success).toBe(true);
        await waitReaped(w.pid);
        const out = join(work, `probe-${cmd}.out`),
          logName = `restore-${cmd}.log`;
        const argv = cmd === "probe" ? ["python3", "-c", EXEC_PROBE, out, w.dir] : ["/nonexistent/cmd"];
        r = c.call({
          type: T.RESTORE,
          opts: { imagesDirFd: d, workDirFd: wd, logFile: logName, logLevel: 4, execCmd: argv },
        });
        expect(r.crErrmsg ?? "").toBe("");
        expect(r.success).toBe(true);
        expect(r.restore!.pid).toBe(w.pid);
        restored.push(w.pid);
        const code = await Promise.race([c.proc.exited, Bun.sleep(30000).then(() => -1)]);
        const log = readFileSync(join(work, logName), "utf8");
        if (cmd === "probe") {
          expect(code).toBe(0);
          // [command's pid, its children..., the restored root's exit status]
          expect(readFileSync(out, "utf8").trim().split(" ").map(Number)).toEqual([c.proc.pid, w.pid, 0]);
          expect((await waitResult(w, 15000)).text).toStartWith("PASS");
          expect(log).toContain("Restore finished successfully");
          expect(log).toContain("probe: running"); // the command's stdout is the log
          restored.pop();
        } else {
          expect(`${code} ${await new Response(c.proc.stderr as any).text()}`).toBe("1 "); // the error is in the log only
          expect(log).toContain("Failed to exec cmd /nonexistent/cmd: ENOENT (errno 2: No such file or directory)");
          expect(isAlive(w.pid)).toBe(true);
        }
      } finally {
        closeSync(d);
        closeSync(wd);
      }
    }
  } finally {
    for (const p of restored)
      try {
        process.kill(p, 9);
      } catch {}
    rmSync(work, { recursive: true, force: true });
  }
}, 90000);

test("config_file overrides the request as criu's does (leave-running, log-file); an option criu-bun does not implement and a malformed line are refused naming the file and line, nothing dumped", async () => {
  const w = await startWorkload("counter");
  const dir = imagesDir("swrk-config");
  const work = mkdtempSync(join(tmpdir(), "criu-bun-swrk-conf-"));
  const d = dirFd(dir);
  try {
    const c = Client.start();
    const conf = (name: string, text: string) => {
      const f = join(work, name);
      writeFileSync(f, text);
      return f;
    };
    // refused before anything is touched: one line naming the file and line each
    for (const [text, want] of [
      ["tcp-established\nstream\n", /^--stream: not supported by criu-bun yet .*\(.*bad1\.conf:2\)$/],
      ["# runc.conf\nlog-file a b\n", /^config_file .*bad2\.conf:2: more than one value: 'a b'/],
      ["no-such-option\n", /^config_file .*bad3\.conf:1: unrecognized option '--no-such-option'$/],
      ["ghost-limit lots\n", /^config_file .*bad4\.conf:1: --ghost-limit: 'lots' is not a number$/],
    ] as const) {
      const i =
        ["tcp-established\nstream\n", "# runc.conf\nlog-file a b\n", "no-such-option\n", "ghost-limit lots\n"].indexOf(
          text
        ) + 1;
      const r = c.call({ type: T.DUMP, opts: { imagesDirFd: d, pid: w.pid, configFile: conf(`bad${i}.conf`, text) } });
      expect(r.success).toBe(false);
      expect(r.crErrmsg).toMatch(want);
      expect(procState(w.pid)).not.toBe("t");
    }
    const log = join(work, "from-conf.log");
    const r = c.call({
      type: T.DUMP,
      opts: {
        imagesDirFd: d,
        pid: w.pid,
        logFile: "request.log",
        configFile: conf("good.conf", `# as runc.conf\nleave-running\nlog-file ${log}\nverbosity 4   # more\n`),
      },
    });
    expect(r.crErrmsg ?? "").toBe("");
    expect(r.success).toBe(true);
    // leave-running from the file: the tree goes on; log-file and verbosity from the file too
    expect(isAlive(w.pid)).toBe(true);
    expect(readFileSync(log, "utf8")).toContain("config_file");
    expect(readFileSync(log, "utf8")).toContain("Dumping finished successfully");
    expect(existsSync(join(dir, "request.log"))).toBe(false);
    expect(await c.close()).toBe(0);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  } finally {
    closeSync(d);
    rmSync(work, { recursive: true, force: true });
  }
}, 60000);
