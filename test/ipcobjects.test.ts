// SysV objects of a tree's own IPC namespace that no process holds (src/resources/ipcns.ts): message
// queues with their messages, semaphore sets and unattached segments, saved in CRIU 4.2's images
// (ipcns-msg/sem/shm-<id>.img) and made again with the same ids, keys, owners, creators, modes,
// qbytes, messages, values and contents. The workload (test/workloads/ipcobjects.c, under
// `unshare --ipc`) checks every one of them itself after the restore. Both ways with CRIU 4.2, a
// dump that leaves the tree running (-R) and a refused dump both leave the queue's messages where
// they were, and a damaged image fails the restore in one line.
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  startWorkload,
  trigger,
  waitResult,
  waitUntil,
  cleanup,
  criuBun,
  isAlive,
  WORKLOADS_DIR,
  type Workload,
} from "./harness";
import { dump, restore, imagesDir, cleanupImages, waitReaped, havePeer, peer } from "./engine-helpers";
import {
  readImage,
  readImagePayloads,
  writeImageWithPayload,
  writeImage,
  ipcMsgPayload,
  parseIpcMsgPayload,
} from "../src/images/image";
import { writeManifest } from "../src/images/manifest";

afterAll(() => {
  cleanup();
  cleanupImages();
});

const OWN_IPC = { wrap: ["unshare", "--ipc", "--"] };
const start = (args: string[] = []) => startWorkload("ipcobjects", args, OWN_IPC);

/** the tree's pids (pstree.img) */
const treePids = (dir: string) => readImage(dir, "pstree.img", "PSTREE").map((p) => p.pid);
async function treeGone(dir: string) {
  for (const p of treePids(dir)) await waitReaped(p, 10000);
}
function killTree(pids: number[]) {
  for (const p of pids)
    try {
      process.kill(p, "SIGKILL");
    } catch {}
}

/** The objects as the images hold them: [id, key, mode, uid, gid, cuid, cgid] and what each holds. */
function saved(dir: string, pid: number) {
  const ns = readImage(dir, `ids-${pid}.img`, "IDS")[0].ipcNsId;
  const d = (x: {
    desc?: { id: number; key: number; mode: number; uid: number; gid: number; cuid: number; cgid: number };
  }) => [x.desc!.id, x.desc!.key, x.desc!.mode, x.desc!.uid, x.desc!.gid, x.desc!.cuid, x.desc!.cgid];
  return {
    ns,
    msg: readImage(dir, `ipcns-msg-${ns}.img`, "IPCNS_MSG").map((m) => [...d(m), m.qbytes, m.qnum]),
    sem: readImagePayloads(dir, `ipcns-sem-${ns}.img`, "IPCNS_SEM").map(({ msg, payload }) => [
      ...d(msg),
      [...new Uint16Array(payload.slice(0, msg.nsems * 2).buffer)],
    ]),
    shm: readImage(dir, `ipcns-shm-${ns}.img`, "IPCNS_SHM")
      .map((s) => [...d(s), Number(s.size), s.inPagemaps])
      .sort((a, b) => (a[0] as number) - (b[0] as number)),
  };
}

async function passes(w: Workload) {
  trigger(w);
  const r = await waitResult(w, 15000);
  if (!r.pass) console.error(r.text);
  expect(r.text).toStartWith("PASS");
}

describe("SysV objects of the tree's own IPC namespace", () => {
  test("criu-bun dumps and restores them: ids, keys, owners, creators, modes, qbytes, messages in order, values, an unattached segment's contents", async () => {
    const w = await start();
    const dir = imagesDir("ipcobj");
    dump(w.pid, dir);
    const s = saved(dir, w.pid);
    expect(s.ns).toBe(14);
    // Q (id 1: a queue was made and removed at 0 before it) and E
    expect(s.msg).toEqual([
      [1, 0x51c0001, 0o640, 4242, 4243, 1001, 1002, 5000, 5],
      [2, 0, 0o600, 0, 0, 0, 0, 16384, 0],
    ]);
    expect(s.sem).toEqual([
      [0, 0x5e0001, 0o660, 4242, 4243, 1001, 1002, [0, 1, 32767, 42]],
      [1, 0, 0o600, 0, 0, 0, 0, [9]],
    ]);
    // L (attached by nobody) and B (the child's)
    expect(s.shm).toEqual([
      [0, 0x5a0001, 0o604, 4242, 4243, 1001, 1002, 3 * 4096 + 50, true],
      [1, 0, 0o600, 0, 0, 0, 0, 4096, true],
    ]);
    const log = readFileSync(join(dir, "dump.log"), "utf8");
    expect(log).toContain("SysV message queue 1 (key 0x51c0001");
    expect(log).toContain("copied (MSG_COPY)");
    await treeGone(dir);
    const r = await restore(dir, w.pid);
    await passes(w);
    expect(await r.proc.exited).toBe(0);
  }, 60000);

  test("a dump that leaves the tree running (-R) takes no message: every object is checked after it, in the same processes", async () => {
    const w = await start();
    const r = criuBun(["dump", "-R", "-t", String(w.pid), "-D", imagesDir("ipcobj-R")]);
    expect(r.code).toBe(0);
    await passes(w);
  }, 60000);

  test("a refused dump (a segment locked in memory) names it in one line; the tree runs on with every message still queued", async () => {
    const w = await start(["locked"]);
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("ipcobj-locked")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^Error \\(dump\\): process ${w.pid}: SysV IPC state restore cannot make again \\(SysV shared memory segment \\d+ is locked in memory \\(SHM_LOCK\\)\\) is not supported yet\\n$`
      )
    );
    expect(isAlive(w.pid)).toBe(true);
    expect(readFileSync(`/proc/${w.pid}/status`, "utf8")).toMatch(/TracerPid:\s*0\n/);
    await passes(w);
  }, 60000);

  test("a refused dump (a process outside the tree waits on a semaphore) names the set in one line; the tree runs on", async () => {
    const w = await start(["waiter"]);
    const ext = Number(readFileSync(join(w.dir, "ext-pid"), "utf8"));
    try {
      const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("ipcobj-waiter")]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(
          `^Error \\(dump\\): process ${w.pid}: .*\\(SysV semaphore set 1: semaphore 0 has a process outside the tree waiting on it\\) is not supported yet\\n$`
        )
      );
      expect(isAlive(w.pid)).toBe(true);
      await passes(w);
    } finally {
      killTree([ext]);
    }
  }, 60000);

  test("a refused dump (kernel.shm_rmid_forced 1: reading the unattached segment would destroy it) names it in one line; the segment is still there", async () => {
    const w = await start();
    const set = Bun.spawnSync(
      ["nsenter", "-i", "-t", String(w.pid), "sh", "-c", "echo 1 > /proc/sys/kernel/shm_rmid_forced"],
      { stderr: "pipe" }
    );
    expect(set.exitCode, set.stderr.toString()).toBe(0);
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("ipcobj-rmid")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^Error \\(dump\\): process ${w.pid}: .*\\(SysV shared memory segment 0 is attached by no process of the tree and kernel\\.shm_rmid_forced is 1: reading it would destroy it\\) is not supported yet\\n$`
      )
    );
    await passes(w);
  }, 60000);

  test("damaged images fail the restore in one line naming the file and object, before anything is made; kernel.shm_rmid_forced 1 with an unattached segment fails it once the processes are attached, leaving nothing behind", async () => {
    const w = await start();
    const dir = imagesDir("ipcobj-bad");
    dump(w.pid, dir);
    const ns = saved(dir, w.pid).ns;
    const msgFile = `ipcns-msg-${ns}.img`,
      semFile = `ipcns-sem-${ns}.img`;
    await treeGone(dir);
    // [what is damaged, the error line's end]
    const cases: [(d: string) => void, string][] = [
      [
        (d) => {
          const items = readImagePayloads(d, msgFile, "IPCNS_MSG");
          items[0].msg.desc!.mode |= 0o4000;
          writeImageWithPayload(d, msgFile, "IPCNS_MSG", items);
        },
        `${msgFile}: SysV message queue 1: mode 04640 has bits other than the permissions`,
      ],
      [
        (d) => {
          const items = readImagePayloads(d, msgFile, "IPCNS_MSG");
          const msgs = parseIpcMsgPayload(items[0].payload, items[0].msg.qnum);
          (msgs[2].msg as unknown as { mtype: bigint }).mtype = 0n;
          items[0].payload = ipcMsgPayload(msgs);
          writeImageWithPayload(d, msgFile, "IPCNS_MSG", items);
        },
        `${msgFile}: SysV message queue 1: message 2 has type 0 (a message's type is 1 or more)`,
      ],
      [
        (d) => {
          const items = readImagePayloads(d, semFile, "IPCNS_SEM");
          items[0].payload = items[0].payload.slice();
          items[0].payload.set([0xff, 0xff], 6);
          writeImageWithPayload(d, semFile, "IPCNS_SEM", items);
        },
        `${semFile}: SysV semaphore set 0: semaphore 3 is 65535, more than SEMVMX 32767`,
      ],
      [
        (d) => {
          const items = readImagePayloads(d, semFile, "IPCNS_SEM");
          items[1].msg.desc!.id = items[0].msg.desc!.id;
          writeImageWithPayload(d, semFile, "IPCNS_SEM", items);
        },
        `${semFile}: SysV semaphore set 0: id 0 is there twice`,
      ],
    ];
    for (const [i, [damage, line]] of cases.entries()) {
      const d = imagesDir(`ipcobj-bad-${i}`);
      cpSync(dir, d, { recursive: true });
      damage(d);
      const r = criuBun(["restore", "-D", d]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(
        new RegExp(`^Error \\(restore\\): ${d}/${line.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\n$`)
      );
      expect(existsSync(`/proc/${w.pid}`)).toBe(false);
    }
    // kernel.shm_rmid_forced 1 with a segment nobody attaches: criu-bun, its creator at restore,
    // would take it along when it exits; found once the processes are attached, the restore fails
    // and leaves nothing behind
    const d = imagesDir("ipcobj-bad-rmid");
    cpSync(dir, d, { recursive: true });
    const v = readImage(d, `ipcns-var-${ns}.img`, "IPC_VAR");
    v[0].shmRmidForced = 1;
    writeImage(d, `ipcns-var-${ns}.img`, "IPC_VAR", v);
    writeManifest(d); // changed on purpose: past the sums, to the check that is the subject here
    const r = criuBun(["restore", "-D", d]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(
      new RegExp(
        `^Error \\(restore\\): process ${w.pid}: SysV shared memory 0 attached by no process, with kernel\\.shm_rmid_forced 1: it would be destroyed once criu-bun exits\\n$`
      )
    );
    await waitUntil(`process ${w.pid} gone after the failed restore`, () => !existsSync(`/proc/${w.pid}`), 10000);
  }, 60000);
});

describe.skipIf(!havePeer)("SysV objects with CRIU 4.2 as the peer", () => {
  test("CRIU 4.2 dumps, criu-bun restores", async () => {
    const w = await start();
    const dir = imagesDir("ipcobj-peer");
    peer(["dump", "-t", String(w.pid)], dir, "dump.log");
    const s = saved(dir, w.pid);
    expect(s.msg.map((m) => m.slice(0, 2))).toEqual([
      [1, 0x51c0001],
      [2, 0],
    ]);
    await treeGone(dir);
    const r = await restore(dir, w.pid);
    await passes(w);
    expect(await r.proc.exited).toBe(0);
  }, 60000);

  test("both tools dump one tree (-R): the same ipcns-msg and ipcns-sem bytes, the same segments and contents; the tree runs on with its messages", async () => {
    const w = await start();
    const c = imagesDir("ipcobj-cmp-criu"),
      b = imagesDir("ipcobj-cmp-bun");
    peer(["dump", "-R", "-t", String(w.pid)], c, "dump.log");
    dump(w.pid, b, ["-R"]);
    const ns = (dir: string) => readImage(dir, `ids-${w.pid}.img`, "IDS")[0].ipcNsId;
    for (const kind of ["msg", "sem"])
      expect(readFileSync(join(b, `ipcns-${kind}-${ns(b)}.img`))).toEqual(
        readFileSync(join(c, `ipcns-${kind}-${ns(c)}.img`))
      );
    // a segment as restore sees it: zero, then each run of its pagemap from the pages file
    const segs = (dir: string) =>
      readImage(dir, `ipcns-shm-${ns(dir)}.img`, "IPCNS_SHM")
        .sort((x, y) => x.desc!.id - y.desc!.id)
        .map((s) => {
          const out = new Uint8Array(Number(s.size));
          const pm = readImage(dir, `pagemap-shmem-${s.desc!.id}.img`, "PAGEMAP");
          const pages = readFileSync(join(dir, `pages-${(pm[0] as { pagesId: number }).pagesId}.img`));
          let off = 0;
          for (const e of pm.slice(1) as { vaddr: bigint; nrPages: bigint }[]) {
            const len = Number(e.nrPages) * 4096;
            out.set(pages.subarray(off, off + Math.min(len, Number(s.size - e.vaddr))), Number(e.vaddr));
            off += len;
          }
          return {
            desc: { ...s.desc, $typeName: undefined },
            size: s.size,
            inPagemaps: s.inPagemaps,
            bytes: Bun.hash(out),
          };
        });
    expect(segs(b)).toEqual(segs(c));
    await passes(w);
  }, 60000);

  test("criu-bun dumps, CRIU 4.2 restores (criu: CRIU leaves qbytes at msgmnb and makes objects as root)", async () => {
    const w = await start(["criu"]);
    const dir = imagesDir("ipcobj-bun");
    dump(w.pid, dir);
    const pids = treePids(dir);
    await treeGone(dir);
    try {
      peer(["restore", "-d"], dir, "restore.log");
      await waitUntil(`restored ${w.pid}`, () => existsSync(`/proc/${w.pid}`));
      await passes(w);
    } finally {
      killTree(pids);
    }
  }, 60000);
});

const runc = Bun.which("runc");
const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
describe.skipIf(!runc || !busybox)(
  "in a runc container (an IPC namespace of its own, as every runc container has)",
  () => {
    test("runc checkpoint and runc restore -d with criu-bun as criu: the container's workload finds every object as it was", async () => {
      const base = imagesDir("ipcobj-runc");
      const b = join(base, "bundle"),
        rootfs = join(b, "rootfs"),
        img = join(base, "img"),
        bin = join(base, "bin");
      for (const d of ["bin", "tmp", "proc", "dev", "sys", "work"]) mkdirSync(join(rootfs, d), { recursive: true });
      const cc = Bun.spawnSync(
        ["gcc", "-static", "-O2", "-o", join(rootfs, "bin/ipcobjects"), join(WORKLOADS_DIR, "ipcobjects.c")],
        { stderr: "pipe" }
      );
      expect(cc.exitCode, cc.stderr.toString()).toBe(0);
      mkdirSync(bin);
      const inst = criuBun(["install", "--as-criu", "--prefix", bin]);
      expect(inst.code, inst.stderr).toBe(0);
      expect(Bun.spawnSync(["runc", "spec"], { cwd: b }).exitCode).toBe(0);
      const c = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
      c.process.terminal = false;
      c.process.args = ["/bin/ipcobjects", "/work"];
      c.root.readonly = false;
      // the workload makes objects with a creator of their own, gives them away (IPC_SET as neither
      // owner nor creator) and reads those it does not own
      for (const set of Object.values(c.process.capabilities) as string[][])
        set.push("CAP_SETUID", "CAP_SETGID", "CAP_IPC_OWNER", "CAP_SYS_ADMIN");
      writeFileSync(join(b, "config.json"), JSON.stringify(c));
      const id = `criu-bun-ipc-${process.pid}`;
      // the container's stdio are /dev/null (Bun's pipes are sockets whose far end is outside the
      // container); runc's own are read where it does not hand them on
      const rn = (args: string[], quiet = false) =>
        Bun.spawnSync(["runc", ...args], {
          cwd: b,
          stdin: "ignore",
          stdout: quiet ? "ignore" : "pipe",
          stderr: quiet ? "ignore" : "pipe",
          timeout: 90000,
        });
      try {
        expect(rn(["run", "-d", id], true).exitCode).toBe(0);
        const work = join(rootfs, "work");
        await waitUntil("the container's workload to be ready", () => existsSync(join(work, "ready")), 20000);
        const ck = rn(["--criu", join(bin, "criu"), "checkpoint", "--image-path", img, "--work-path", img, id]);
        expect(`${ck.exitCode} ${ck.stderr}`, readFileSync(join(img, "dump.log"), "utf8").slice(-2000)).toBe("0 ");
        expect(readImage(img, "ipcns-msg-14.img", "IPCNS_MSG").map((m) => m.qnum)).toEqual([5, 0]);
        const rs = rn(
          ["--criu", join(bin, "criu"), "restore", "-d", "--image-path", img, "--work-path", img, id],
          true
        );
        expect(rs.exitCode, readFileSync(join(img, "restore.log"), "utf8").slice(-2000)).toBe(0);
        writeFileSync(join(work, "go"), "");
        await waitUntil("the container's workload to report", () => existsSync(join(work, "result")), 20000);
        const res = readFileSync(join(work, "result"), "utf8");
        if (!res.startsWith("PASS")) console.error(res);
        expect(res).toStartWith("PASS");
      } finally {
        rn(["delete", "-f", id]);
      }
    }, 120000);
  }
);
