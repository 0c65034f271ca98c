// Fields CRIU 4.2 writes that criu-bun's restore once ignored (its schema lacked them), each
// restored from CRIU 4.2's images and written by criu-bun's dumps where CRIU reads them:
// no_new_privs (creds_entry field 18; criu-bun also keeps thread_core field 1001): a seccomp
// workload (no_new_privs and two filters) dumped by either tool is restored by the other;
// a memfd's mode (memfd_inode_entry field 9, st_mode): a memfd fchmod'ed to 0640 (and fchown'ed), dumped by
// CRIU 4.2 and by criu-bun, is restored with that mode and owner; SysV shared memory of a tree's own
// IPC namespace (in_pagemaps, pagemap-shmem, the sysv VMA encoding), both ways.
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  cleanup,
  criuBunCommand,
  REPO_ROOT,
  startWorkload,
  trigger,
  waitResult,
  waitUntil,
  type Workload,
} from "./harness";
import { readImage, writeImage } from "../src/images/image";
import { clone, create, toJson } from "@bufbuild/protobuf";
import * as S from "../src/images/schemas";

const PEER = process.env.CRIU_PEER ?? join(REPO_ROOT, "..", "shared", "tools", "criu-4.2");
const have = existsSync(PEER) && process.getuid?.() === 0;
if (!existsSync(PEER)) console.warn(`SKIP interop-fields: ${PEER} is missing (the reference CRIU 4.2)`);
const tmp = mkdtempSync(join(tmpdir(), "criu-bun-fields-"));
afterAll(() => {
  cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

function run(tool: "criu-bun" | "criu-4.2", args: string[], dir: string) {
  const cmd = tool === "criu-bun" ? [...criuBunCommand(), ...args] : [PEER, ...args];
  const r = Bun.spawnSync([...cmd, "-D", dir, "-o", `${args[0]}.log`, "-v4"], {
    cwd: dir,
    stdout: "pipe",
    stderr: "pipe",
  });
  if (r.exitCode !== 0) {
    const log = (() => {
      try {
        return readFileSync(join(dir, `${args[0]}.log`), "utf8");
      } catch {
        return "";
      }
    })();
    throw new Error(
      `${tool} ${args[0]} failed: ${r.stderr}${log
        .split("\n")
        .filter((l) => l.includes("Error") && !l.includes("RLIMIT_NOFILE"))
        .slice(0, 4)
        .join("\n")}`
    );
  }
}

/** restore DIR with RESTORER (detached), wake the workload and see its own check pass */
async function restoredPasses(restorer: "criu-bun" | "criu-4.2", dir: string, w: Workload) {
  run(restorer, ["restore", "-d"], dir);
  trigger(w);
  expect((await waitResult(w, 15000)).summary).toBe("PASS");
}

for (const [dumper, restorer] of [
  ["criu-4.2", "criu-bun"],
  ["criu-bun", "criu-4.2"],
] as const) {
  test.skipIf(!have)(
    `${dumper} dumps, ${restorer} restores: no_new_privs and the seccomp filters still apply`,
    async () => {
      const w = await startWorkload("seccomp");
      const dir = mkdtempSync(join(tmp, `${dumper}-`));
      run(dumper, ["dump", "-t", String(w.pid)], dir);
      await w.proc!.exited;
      const core = readImage(dir, `core-${w.pid}.img`, "CORE")[0];
      expect(core.threadCore?.creds?.noNewPrivs).toBe(1); // CRIU's field, from both tools
      await restoredPasses(restorer, dir, w);
      // its pty index is free again only once it is gone (the next case needs the same index)
      await waitUntil("the restored workload to be gone", () => !existsSync(`/proc/${w.pid}`), 10000);
    }
  );
}

test.skipIf(!have)(
  "criu-4.2 dumps a memfd fchmod'ed to 0640 and fchown'ed, criu-bun restores it with that mode and owner",
  async () => {
    const w = await startWorkload("exact", ["memfdmode"]);
    const dir = mkdtempSync(join(tmp, "memfd-mode-"));
    run("criu-4.2", ["dump", "-t", String(w.pid)], dir);
    await w.proc!.exited;
    const [ie] = readImage(dir, "memfd.img", "MEMFD_INODE");
    expect(ie.mode & 0o7777).toBe(0o640);
    expect([ie.uid, ie.gid]).toEqual([4242, 4243]);
    await restoredPasses("criu-bun", dir, w);
  }
);

test.skipIf(!have)(
  "criu-bun dumps a memfd fchmod'ed to 0640 and fchown'ed, criu-4.2 restores it with that mode and owner",
  async () => {
    const w = await startWorkload("exact", ["memfdmode"]);
    const dir = mkdtempSync(join(tmp, "memfd-mode-ours-"));
    run("criu-bun", ["dump", "-t", String(w.pid)], dir);
    await w.proc!.exited;
    const [ie] = readImage(dir, "memfd.img", "MEMFD_INODE");
    expect([ie.mode & 0o7777, ie.uid, ie.gid]).toEqual([0o640, 4242, 4243]);
    await restoredPasses("criu-4.2", dir, w);
  }
);

test("criu-bun writes a memfd's st_mode, as CRIU 4.2 does", async () => {
  const w = await startWorkload("memfd");
  const dir = mkdtempSync(join(tmp, "memfd-ours-"));
  run("criu-bun", ["dump", "-t", String(w.pid), "-R"], dir);
  for (const ie of readImage(dir, "memfd.img", "MEMFD_INODE")) expect(ie.mode).toBe(0o100777);
});

// membarrier registrations (task_core_entry field 22): CRIU 4.2's GET_REGISTRATIONS mask is made
// again by criu-bun's restore; criu-bun's dump writes the registrations themselves (sync-core alone
// leaves REGISTER_PRIVATE_EXPEDITED out, which the kernel's mask shows), so CRIU 4.2 restores them
// exactly too
for (const [dumper, restorer, mode, mask] of [
  ["criu-4.2", "criu-bun", "membarrier", 0x14],
  ["criu-bun", "criu-4.2", "membarrier", 0x14],
  ["criu-bun", "criu-4.2", "membarrier-synccore", 0x40],
] as const) {
  test.skipIf(!have)(
    `${dumper} dumps membarrier registrations (${mode}), ${restorer} restores them: the mask and each expedited command's answer kept`,
    async () => {
      const w = await startWorkload("exact", [mode]);
      const dir = mkdtempSync(join(tmp, `${mode}-${dumper}-`));
      run(dumper, ["dump", "-t", String(w.pid)], dir);
      await w.proc!.exited;
      expect(readImage(dir, `core-${w.pid}.img`, "CORE")[0].tc?.membarrierRegistrationMask).toBe(mask);
      await restoredPasses(restorer, dir, w);
    }
  );
}

// TLS GDT entries (thread_info_x86.tls): two data segments set, the third empty. CRIU 4.2's restorer sets
// them with int $0x80, which this kernel does not serve for a 64-bit process (its restore of its own image
// dies of SIGSEGV), so the criu-bun -> CRIU direction is checked by the image: every field as CRIU 4.2's
const tlsOf = async (dumper: "criu-bun" | "criu-4.2") => {
  const w = await startWorkload("exact", ["tls"]);
  const dir = mkdtempSync(join(tmp, `tls-${dumper}-`));
  run(dumper, ["dump", "-t", String(w.pid)], dir);
  await w.proc!.exited;
  const tls = readImage(dir, `core-${w.pid}.img`, "CORE")[0].threadInfo!.tls.map((d) => toJson(S.user_desc_tSchema, d));
  return { w, dir, tls };
};
test.skipIf(!have)("criu-4.2 dumps TLS GDT entries, criu-bun restores them as they were", async () => {
  const { w, dir, tls } = await tlsOf("criu-4.2");
  expect(tls.map((d: any) => [d.entryNumber, d.baseAddr, d.segNotPresent ?? false])).toEqual([
    [12, 0x12345000, false],
    [13, 0xabc0, false],
    [14, 0, true],
  ]);
  await restoredPasses("criu-bun", dir, w);
});
test.skipIf(!have)("criu-bun writes TLS GDT entries as CRIU 4.2 does, every field", async () => {
  const ours = await tlsOf("criu-bun");
  const theirs = await tlsOf("criu-4.2");
  expect(ours.tls).toEqual(theirs.tls);
  expect(ours.tls.length).toBe(3);
  for (const { w } of [ours, theirs]) await waitUntil(`${w.pid} gone`, () => !existsSync(`/proc/${w.pid}`));
});

// the stop signal of a stopped task (task_core_entry.stop_signo): a child stopped by SIGTSTP
for (const [dumper, restorer] of [
  ["criu-4.2", "criu-bun"],
  ["criu-bun", "criu-4.2"],
] as const) {
  test.skipIf(!have)(
    `${dumper} dumps a child stopped by SIGTSTP, ${restorer} restores it stopped by SIGTSTP`,
    async () => {
      const w = await startWorkload("exact", ["tstp"]);
      const dir = mkdtempSync(join(tmp, `tstp-${dumper}-`));
      run(dumper, ["dump", "-t", String(w.pid)], dir);
      await w.proc!.exited;
      const stopped = readImage(dir, "pstree.img", "PSTREE").find((p) => p.pid !== w.pid)!;
      expect(readImage(dir, `core-${stopped.pid}.img`, "CORE")[0].tc).toMatchObject({ taskState: 3, stopSigno: 20 });
      await waitUntil("the dumped child's pid to be free", () => !existsSync(`/proc/${stopped.pid}`), 10000);
      await restoredPasses(restorer, dir, w);
    }
  );
}

test.skipIf(!have)(
  "a CRIU 4.2 image with a membarrier mask of no registration, CET shadow stack state, or registers or a TLS entry the kernel refuses is refused in one line naming the file, nothing restored",
  async () => {
    const w = await startWorkload("counter");
    const dir = mkdtempSync(join(tmp, "refused-"));
    run("criu-4.2", ["dump", "-t", String(w.pid)], dir);
    await w.proc!.exited;
    const file = `core-${w.pid}.img`;
    const orig = readImage(dir, file, "CORE")[0];
    for (const [what, change, line] of [
      [
        "membarrier",
        (c: any) => {
          c.tc.membarrierRegistrationMask = 0x18;
        },
        `membarrier registrations (mask 0x18) hold a command that is no registration`,
      ],
      [
        "cet",
        (c: any) => {
          c.threadInfo.fpregs.xsave.cet = create(S.user_x86_cet_entrySchema, { cet: 1n, ssp: 0x7ff000n });
        },
        `CET shadow stack state (cet 0x1, ssp 0x7ff000) cannot be restored by criu-bun yet`,
      ],
      // what the kernel's PTRACE_SET_THREAD_AREA refuses (EINVAL) is refused before anything is made
      [
        "tls-base",
        (c: any) => {
          c.threadInfo.tls[2].baseAddr = 1;
        },
        `TLS entry 2 (GDT 14): not a segment the kernel accepts (a present 32-bit data segment or an empty entry)`,
      ],
      [
        "tls-code",
        (c: any) => {
          Object.assign(c.threadInfo.tls[0], {
            seg32bit: true,
            segNotPresent: false,
            readExecOnly: false,
            contentsH: true,
          });
        },
        `TLS entry 0 (GDT 12): not a segment the kernel accepts (a present 32-bit data segment or an empty entry)`,
      ],
      // and what PTRACE_SETREGS (EIO) and the xstate regset (EINVAL) refuse
      [
        "cs",
        (c: any) => {
          c.threadInfo.gpregs.cs = 0n;
        },
        `segment register cs 0x0 is not a user selector`,
      ],
      [
        "fs_base",
        (c: any) => {
          c.threadInfo.gpregs.fsBase = 0xffff800000000000n;
        },
        `fs_base 0xffff800000000000 is outside user space`,
      ],
      [
        "mxcsr",
        (c: any) => {
          c.threadInfo.fpregs.mxcsr = 0x11f80;
        },
        `MXCSR 0x11f80 has reserved bits set`,
      ],
      [
        "xstate",
        (c: any) => {
          c.threadInfo.fpregs.xsave.xstateBv = 0x40003n; // XTILEDATA: no process has it before asking
        },
        `xstate components 0x40000 (xstate_bv 0x40003) are not available to a process on this machine`,
      ],
      [
        "tls-entry",
        (c: any) => {
          c.threadInfo.tls[1].entryNumber = 15;
        },
        `TLS entry 1 (GDT 15): not one of the TLS entries 12..14`,
      ],
    ] as const) {
      const c: any = clone(S.core_entrySchema, orig);
      change(c);
      writeImage(dir, file, "CORE", [c]);
      const r = Bun.spawnSync([...criuBunCommand(), "restore", "-d", "-D", dir], { stdout: "pipe", stderr: "pipe" });
      expect(`${what}: ${r.exitCode} ${r.stderr.toString()}`).toBe(
        `${what}: 1 Error (restore): ${join(dir, file)}: ${line}\n`
      );
      expect(existsSync(`/proc/${w.pid}`)).toBe(false);
    }
  }
);

for (const [dumper, restorer] of [
  ["criu-bun", "criu-4.2"],
  ["criu-4.2", "criu-bun"],
] as const) {
  test.skipIf(!have)(
    `${dumper} dumps a pty pair whose slave was chown()ed, ${restorer} restores it: same owner, both ends work`,
    async () => {
      const w = await startWorkload("exact", ["ptyowner"]);
      const dir = mkdtempSync(join(tmp, `pty-${dumper}-`));
      run(dumper, ["dump", "-t", String(w.pid)], dir);
      await w.proc!.exited;
      // CRIU's numbering, which CRIU pairs master and slave by: (index << 1) + 1 for the master, index << 1 for the slave
      const infos = readImage(dir, "tty-info.img", "TTY_INFO");
      expect(infos.map((i) => i.id - i.pty!.index * 2).sort()).toEqual([0, 1]);
      // every tty entry names its path through a regular-file entry (CRIU refuses one without)
      const files = readImage(dir, "files.img", "FILES");
      for (const f of files.filter((x) => x.tty))
        expect(files.find((x) => x.id === f.tty!.regfId)?.reg?.name).toMatch(/^\/dev\/(ptmx|pts\/\d+)$/);
      await ptysFree(dir);
      await restoredPasses(restorer, dir, w);
      // its pty index is free again only once it is gone (the next case needs the same index)
      await waitUntil("the restored workload to be gone", () => !existsSync(`/proc/${w.pid}`), 10000);
    }
  );
}

// the pty pairs of workloads/ptypair.py: a session leader's controlling terminal, a master never
// unlocked and one locked again after its slave was opened (tty_info_entry.locked, both ways)
for (const [dumper, restorer] of [
  ["criu-bun", "criu-4.2"],
  ["criu-4.2", "criu-bun"],
] as const) {
  test.skipIf(!have)(
    `${dumper} dumps pty pairs with locked masters, ${restorer} restores them: still locked, termios, window and terminal kept`,
    async () => {
      const w = await startWorkload("ptypair.py");
      const dir = mkdtempSync(join(tmp, `ptylock-${dumper}-`));
      run(dumper, ["dump", "-t", String(w.pid)], dir);
      await w.proc!.exited;
      expect(readImage(dir, "tty-info.img", "TTY_INFO").filter((i) => i.locked).length).toBe(2);
      await ptysFree(dir);
      await restoredPasses(restorer, dir, w);
      await waitUntil("the restored workload to be gone", () => !existsSync(`/proc/${w.pid}`), 10000);
    }
  );
}

// SysV shared memory in a tree's own IPC namespace (workloads/sysvshm.c: three segments, one read-only
// in the parent, one split in three VMAs by mprotect, one marked IPC_RMID; patterns, holes and zero
// pages), saved as CRIU 4.2 saves it: ipc_shm_entry with in_pagemaps in ipcns-shm-<ns>.img, contents in
// pagemap-shmem-<shmid>.img + a pages file, each mapping a VMA_ANON_SHARED | VMA_AREA_SYSVIPC VMA
// (MAP_SHARED | MAP_ANONYMOUS, shmid = the segment's id, fdflags O_RDWR or O_RDONLY). CRIU 4.2's
// restore does not keep the IPC_RMID mark (it creates the segment with the mode's permission bits
// only): restored by CRIU, the workload runs without that mark (nodest).
/** every pty index the images name free again (the dumped tree's, released a little after it is gone) */
const ptysFree = async (dir: string) => {
  for (const i of readImage(dir, "tty-info.img", "TTY_INFO")) {
    if (i.pty) await waitUntil(`/dev/pts/${i.pty.index} free`, () => !existsSync(`/dev/pts/${i.pty!.index}`), 20000);
  }
};
const treeGone = async (dir: string) => {
  for (const p of readImage(dir, "pstree.img", "PSTREE"))
    await waitUntil(`process ${p.pid} reaped`, () => !existsSync(`/proc/${p.pid}`), 20000);
};
for (const [dumper, restorer] of [
  ["criu-bun", "criu-4.2"],
  ["criu-4.2", "criu-bun"],
] as const) {
  test.skipIf(!have)(
    `${dumper} dumps SysV shared memory of the tree's own IPC namespace, ${restorer} restores it: ids, keys, modes, owner, contents, sharing and protections`,
    async () => {
      const w = await startWorkload("sysvshm", restorer === "criu-4.2" ? ["nodest"] : [], {
        wrap: ["unshare", "--ipc", "--"],
      });
      const dir = mkdtempSync(join(tmp, `sysv-${dumper}-`));
      run(dumper, ["dump", "-t", String(w.pid)], dir);
      const ipcNs = readImage(dir, `ids-${w.pid}.img`, "IDS")[0].ipcNsId;
      const segs = readImage(dir, `ipcns-shm-${ipcNs}.img`, "IPCNS_SHM");
      expect(segs.map((s) => [s.desc!.id, Number(s.size), s.inPagemaps]).sort()).toEqual([
        [0, 20580, true],
        [1, 8192, true],
        [2, 12288, true],
      ]);
      for (const s of segs) expect(existsSync(join(dir, `pagemap-shmem-${s.desc!.id}.img`))).toBe(true);
      const sysv = readImage(dir, `mm-${w.pid}.img`, "MM")[0].vmas.filter((v) => v.status & (1 << 10));
      expect(sysv.map((v) => [Number(v.shmid), Number(v.pgoff), v.prot, v.flags, v.status, v.fdflags])).toEqual([
        [1, 0, 1, 0x21, 0x501, 0], // B, SHM_RDONLY
        [2, 0, 3, 0x21, 0x501, 2],
        [2, 4096, 1, 0x21, 0x501, 2],
        [2, 8192, 3, 0x21, 0x501, 2], // C in three parts
        [0, 0, 3, 0x21, 0x501, 2], // A
      ]);
      await treeGone(dir);
      await restoredPasses(restorer, dir, w);
    },
    90000
  );
}

test.skipIf(!have)(
  "criu-bun and CRIU 4.2 save the same SysV segments of one tree: entries, VMAs and each segment's bytes",
  async () => {
    const w = await startWorkload("sysvshm", [], { wrap: ["unshare", "--ipc", "--"] });
    const c = mkdtempSync(join(tmp, "sysv-cmp-criu-")),
      b = mkdtempSync(join(tmp, "sysv-cmp-bun-"));
    run("criu-4.2", ["dump", "-R", "-t", String(w.pid)], c);
    run("criu-bun", ["dump", "-R", "-t", String(w.pid)], b);
    const bytes = (dir: string, s: S.ipc_shm_entry) => {
      // the segment as restore sees it: zero, then each run of the pagemap from its pages file
      const out = new Uint8Array(Number(s.size));
      const pm = readImage(dir, `pagemap-shmem-${s.desc!.id}.img`, "PAGEMAP");
      const pages = readFileSync(join(dir, `pages-${(pm[0] as S.pagemap_head).pagesId}.img`));
      let off = 0;
      for (const e of pm.slice(1) as S.pagemap_entry[]) {
        const len = Number(e.nrPages) * 4096;
        out.set(pages.subarray(off, off + Math.min(len, Number(s.size - e.vaddr))), Number(e.vaddr));
        off += len;
      }
      return Bun.hash(out).toString(16);
    };
    const view = (dir: string) => {
      const ns = readImage(dir, `ids-${w.pid}.img`, "IDS")[0].ipcNsId;
      const segs = readImage(dir, `ipcns-shm-${ns}.img`, "IPCNS_SHM").sort((x, y) => x.desc!.id - y.desc!.id);
      const pids = readImage(dir, "pstree.img", "PSTREE").map((p) => p.pid);
      return {
        segs: segs.map((s) => ({
          desc: { ...s.desc, $typeName: undefined },
          size: s.size,
          inPagemaps: s.inPagemaps,
          bytes: bytes(dir, s),
        })),
        vmas: pids.map((p) =>
          readImage(dir, `mm-${p}.img`, "MM")[0]
            .vmas.filter((v) => v.status & (1 << 10))
            .map((v) => [v.start, v.end, v.pgoff, v.shmid, v.prot, v.flags, v.status, v.fd, v.fdflags])
        ),
      };
    };
    expect(view(b)).toEqual(view(c));
    trigger(w);
    expect((await waitResult(w, 15000)).summary).toBe("PASS"); // both dumps left it running, unharmed
  },
  90000
);

// pidfds (exact.c pidfd: on itself, two on a child sharing an inode, one O_NONBLOCK, one on a
// grandchild): their flags as CRIU writes them, without the access mode, which CRIU 4.2 hands to
// pidfd_open() (O_RDWR there is EINVAL: it failed to restore criu-bun's before)
for (const [dumper, restorer] of [
  ["criu-bun", "criu-4.2"],
  ["criu-4.2", "criu-bun"],
] as const) {
  test.skipIf(!have)(
    `${dumper} dumps pidfds, ${restorer} restores them: same processes, shared inode, O_NONBLOCK`,
    async () => {
      const w = await startWorkload("exact", ["pidfd"]);
      const dir = mkdtempSync(join(tmp, `pidfd-${dumper}-`));
      run(dumper, ["dump", "-t", String(w.pid)], dir);
      const flags = readImage(dir, "files.img", "FILES")
        .filter((f) => f.pidfd)
        .map((f) => f.pidfd!.flags)
        .sort((a, b) => a - b);
      expect(flags).toEqual([0, 0, 0, 0o4000]);
      await treeGone(dir);
      await restoredPasses(restorer, dir, w);
    },
    90000
  );
}

// a pty slave as a child session leader's controlling terminal (exact.c ctty, cttyclosed): the
// session and its foreground group are written on both tty-info entries, as CRIU writes them (CRIU
// 4.2's restore takes the master's: with criu-bun's images it made no controlling terminal before)
for (const mode of ["ctty", "cttyclosed"]) {
  for (const [dumper, restorer] of [
    ["criu-bun", "criu-4.2"],
    ["criu-4.2", "criu-bun"],
  ] as const) {
    test.skipIf(!have)(
      `${dumper} dumps a pty as a session's controlling terminal (${mode}), ${restorer} restores it: /dev/tty opens, TIOCGSID names the session, SIGHUP on hangup`,
      async () => {
        const w = await startWorkload("exact", [mode]);
        const dir = mkdtempSync(join(tmp, `${mode}-${dumper}-`));
        run(dumper, ["dump", "-t", String(w.pid)], dir);
        const infos = readImage(dir, "tty-info.img", "TTY_INFO");
        const leader = readImage(dir, "pstree.img", "PSTREE").find((p) => p.sid === p.pid && p.pid !== w.pid)!;
        // the master's entry (CRIU writes no slave entry when no fd holds the slave: cttyclosed)
        expect(infos.filter((i) => i.id & 1).map((i) => [i.sid, i.pgrp])).toEqual([[leader.pid, leader.pgid]]);
        for (const i of infos) expect([i.id, i.sid, i.pgrp]).toEqual([i.id, leader.pid, leader.pgid]);
        await treeGone(dir);
        await ptysFree(dir);
        await restoredPasses(restorer, dir, w);
        await treeGone(dir); // its pty index is free again only once all of it is gone
      },
      90000
    );
  }
}

// fds on /proc/CHILD/status and /proc/CHILD of a process of the tree (exact.c procpid), restored once
// the dumped processes are reaped: the paths are there again once the tree is (restore refused them
// as gone when the originals' zombies were reaped first)
for (const [dumper, restorer] of [
  ["criu-4.2", "criu-bun"],
  ["criu-bun", "criu-bun"],
  ["criu-bun", "criu-4.2"],
] as const) {
  test.skipIf(!have)(
    `${dumper} dumps fds on /proc/PID of a process of the tree, ${restorer} restores them after the originals are reaped`,
    async () => {
      const w = await startWorkload("exact", ["procpid"]);
      const dir = mkdtempSync(join(tmp, `procpid-${dumper}-${restorer}-`));
      run(dumper, ["dump", "-t", String(w.pid)], dir);
      await treeGone(dir);
      await restoredPasses(restorer, dir, w);
    },
    90000
  );
}
