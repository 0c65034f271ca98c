// Pseudo-terminal pairs inside the dumped tree (a process that opened /dev/ptmx: script, tmux,
// an ssh-like broker ...). Both ends come back on the same pts index with the terminal's
// termios, window size and lock state; a session leader gets its controlling terminal back.
// Bytes queued inside the terminal are not saved: a dump finding any is refused. A /dev/pts/N whose master is outside the tree
// is the terminal of a --shell-job (reg.ts). Images: file_entry.tty + tty-info.img, as CRIU.
import { errnoText, sysFailed } from "../sys/errno";
import { readFileSync, statSync } from "../sys/fs";
import type { FileTable } from "./files";
import type { ImageSink } from "./fdkind";
import { openFd, closeFd } from "../sys/mem";
import type { FdKind, DumpOpts, DumpTree, RestoredProc, TreeFiles } from "./fdkind";
import type { Injector, RemoteMem } from "../ptrace/inject";
import { FOWN0, cachedImage } from "./fdkind";
import { regEntry } from "./reg";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { O, F } from "../sys/mem";
import * as S from "../images/schemas";
import { CriuError, log } from "../log";
import { fdLinks, readStat } from "../sys/proc";
import { refuse } from "./unsupported";
import { readImage, imageExists } from "../images/image";
import { runHook, type Hooks } from "../hooks";
import { fd_types } from "../images/schemas";

const IOC = {
  TCGETS: 0x5401,
  TCSETS: 0x5402,
  TCGETS2: 0x802c542a,
  TCSETS2: 0x402c542b,
  TIOCGLCKTRMIOS: 0x5456,
  TIOCSLCKTRMIOS: 0x5457,
  TIOCGWINSZ: 0x5413,
  TIOCSWINSZ: 0x5414,
  TIOCSCTTY: 0x540e,
  TIOCSPGRP: 0x5410,
  TIOCGPTN: 0x80045430,
  TIOCSPTLCK: 0x40045431,
  TIOCGPTLCK: 0x80045439,
  TIOCGPKT: 0x80045438,
  TIOCGEXCL: 0x80045440,
} as const;
const PTMX_RDEV = (5 << 8) | 2;
const ptsRdev = (i: number) => ((136 + (i >> 8)) << 8) | (i & 0xff); // old-style encoding: minors < 256 per major

/** The pts indexes whose master (/dev/ptmx) some process of the tree holds; and which session owns each slave. */
function ptyMasters(pids: number[], links?: Map<number, [number, string][]>): Set<number> {
  const out = new Set<number>();
  for (const pid of pids) {
    for (const [fd, t] of links?.get(pid) ?? fdLinks(pid)) {
      if (t !== "/dev/ptmx" && t !== "/dev/pts/ptmx") continue;
      const m = /tty-index:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, "latin1"));
      if (m) out.add(Number(m[1]));
    }
  }
  return out;
}

function ioctlBuf(fd: number, req: number, len: number, what: string): Uint8Array {
  const b = new Uint8Array(len);
  const r = syscall(NR.ioctl, fd, req, addr(b));
  if (r < 0) throw new CriuError("files", `${what} failed: ${errnoText(-r)}`);
  return b;
}

// termios_entry.c_cc as CRIU 4.2 writes and reads it: the control characters' bytes copied into the
// array of 19 uint32 (4 bytes to an entry, little-endian: c_cc[0..3] in the first), not one to an
// entry; CRIU's entries past the bytes are left undefined. criu-bun's dumps before wrote one byte to
// an entry (each entry <= 0xff, the later ones rarely all zero): read too, an image that fits both
// readings refused.
const NCC = 19;
function packCc(cc: Uint8Array): number[] {
  const words = new Array<number>(NCC).fill(0);
  for (let i = 0; i < cc.length; i++) words[i >> 2] = (words[i >> 2] | (cc[i] << ((i & 3) * 8))) >>> 0;
  return words;
}
function unpackCc(words: number[], what: string): Uint8Array {
  const cc = new Uint8Array(NCC);
  if (words.length < 5)
    throw new CriuError("restore", `${what}: termios c_cc has ${words.length} entries (CRIU writes ${NCC})`);
  const packed = words.some((w) => w > 0xff);
  if (!packed && words.length >= NCC && words.slice(5).every((w) => w === 0) && words.slice(1, 5).some((w) => w !== 0))
    throw new CriuError(
      "restore",
      `${what}: termios c_cc [${words.slice(0, 5).join(", ")}, 0 ...] reads as CRIU's packed bytes and as one byte to an entry alike; refused`
    );
  if (packed || words.length < NCC || words.slice(5).every((w) => w === 0))
    for (let i = 0; i < NCC; i++) cc[i] = (words[i >> 2] >>> ((i & 3) * 8)) & 0xff;
  else for (let i = 0; i < NCC; i++) cc[i] = words[i];
  return cc;
}
function termiosOf(b: Uint8Array) {
  const dv = new DataView(b.buffer);
  // struct termios (kernel, 36 bytes): 4 flags, c_line, c_cc[19], then speeds come from c_cflag
  return {
    cIflag: dv.getUint32(0, true),
    cOflag: dv.getUint32(4, true),
    cCflag: dv.getUint32(8, true),
    cLflag: dv.getUint32(12, true),
    cLine: b[16],
    // struct termios2 (TCGETS2, 44 bytes): the input and output speeds after c_cc (a rate other
    // than the Bnnn ones is only there: BOTHER in c_cflag); 0 from a 36-byte struct termios
    cIspeed: b.length >= 44 ? dv.getUint32(36, true) : 0,
    cOspeed: b.length >= 44 ? dv.getUint32(40, true) : 0,
    cCc: packCc(b.subarray(17, 36)),
  };
}
/** struct termios2 (44 bytes) when the entry has both speeds (criu-bun's), else struct termios (36: CRIU 4.2 keeps none) */
function termiosBytes(t: S.termios_entry, what: string): Uint8Array {
  const b = new Uint8Array(t.cIspeed && t.cOspeed ? 44 : 36),
    dv = new DataView(b.buffer);
  if (b.length === 44) {
    dv.setUint32(36, t.cIspeed, true);
    dv.setUint32(40, t.cOspeed, true);
  }
  dv.setUint32(0, t.cIflag, true);
  dv.setUint32(4, t.cOflag, true);
  dv.setUint32(8, t.cCflag, true);
  dv.setUint32(12, t.cLflag, true);
  b[16] = t.cLine;
  b.set(unpackCc(t.cCc, what), 17);
  return b;
}

/** The slave's tty-info entry (termios, window size, owner, session): written once per pty. */
function slaveInfo(fd: number, index: number, sid: number, pgrp: number, uid: number, gid: number, what: string) {
  const termios = termiosOf(ioctlBuf(fd, IOC.TCGETS2, 44, `${what}: TCGETS2`));
  const termiosLocked = termiosOf(ioctlBuf(fd, IOC.TIOCGLCKTRMIOS, 36, `${what}: TIOCGLCKTRMIOS`));
  const ws = new DataView(ioctlBuf(fd, IOC.TIOCGWINSZ, 8, `${what}: TIOCGWINSZ`).buffer);
  return {
    id: index * 2,
    type: 1 /* PTY */,
    locked: false,
    exclusive: false,
    packetMode: false,
    sid,
    pgrp,
    rdev: ptsRdev(index),
    termios,
    termiosLocked,
    winsize: {
      wsRow: ws.getUint16(0, true),
      wsCol: ws.getUint16(2, true),
      wsXpixel: ws.getUint16(4, true),
      wsYpixel: ws.getUint16(6, true),
    },
    pty: { index },
    uid,
    gid,
  };
}

/**
 * A session leader whose controlling terminal is a pty of the tree that it holds no fd of (it
 * closed it): the slave's tty-info entry carries its session all the same, read here through an
 * fd of criu-bun's own; restore opens the slave in the leader (restoreCtty) to make it its
 * controlling terminal again.
 */
function noteCtty(
  files: FileTable,
  images: ImageSink,
  statRoot: string,
  index: number,
  sid: number,
  where: string,
  pgrp = 0
) {
  const key = `ttyinfo:${index * 2}`;
  if (files.byKey.has(key)) return;
  const fd = openFd(`${statRoot}/dev/pts/${index}`, O.RDONLY | O.NOCTTY | O.NONBLOCK | O.CLOEXEC);
  try {
    const st = statSync(`/proc/self/fd/${fd}`);
    images.add(
      "tty-info.img",
      "TTY_INFO",
      S.tty_info_entrySchema,
      slaveInfo(fd, index, sid, pgrp, st.uid, st.gid, where)
    );
  } finally {
    closeFd(fd);
  }
  files.byKey.set(key, index * 2);
  log.debug(
    `${where}: controlling terminal /dev/pts/${index} held by no fd of its session leader ${sid}: noted for restore`
  );
}

/** Restore: the session leader takes its controlling pty again by opening it (no O_NOCTTY), and
 *  gives it back its foreground process group (TIOCSPGRP; TIOCSCTTY made the leader's own group the
 *  foreground one). The session is on the master's entry too (CRIU 4.2 writes no slave entry when
 *  no fd holds the slave). */
function restoreCtty(p: RestoredProc, infos: S.tty_info_entry[]) {
  for (const index of new Set(infos.filter((i) => i.pty && i.sid === p.vpid).map((i) => i.pty!.index))) {
    const fd = Number(p.inj.call(NR.openat, -100, p.str(`/dev/pts/${index}`), O.RDWR | O.CLOEXEC, 0));
    if (fd < 0)
      throw new CriuError(
        "restore",
        `process ${p.vpid}: cannot open its controlling terminal /dev/pts/${index}: ${errnoText(-fd)}`
      );
    const pgrp = infos.find((i) => i.pty?.index === index && i.sid === p.vpid && i.pgrp)?.pgrp ?? 0;
    const r = pgrp
      ? p.inj.call(NR.ioctl, fd, IOC.TIOCSPGRP, p.scratch(0n, new Uint8Array(new Int32Array([pgrp]).buffer)))
      : 0n;
    p.inj.call(NR.close, fd);
    if (r < 0n)
      throw new CriuError(
        "restore",
        sysFailed(`process ${p.vpid}`, `TIOCSPGRP ${pgrp} (the foreground group of /dev/pts/${index})`, r)
      );
    log.debug(
      `process ${p.vpid}: /dev/pts/${index} is its controlling terminal again${pgrp ? `, process group ${pgrp} in the foreground` : ""}`
    );
  }
}

/** Run USE on a copy (pidfd_getfd) of /dev/pts/INDEX's master, which process h.pid holds at h.fd;
 *  WHY names the step in the failure lines. The copy is closed afterwards. */
function withMasterCopy(h: { pid: number; fd: number }, index: number, why: string, use: (fd: number) => void) {
  const pidfd = syscall(NR.pidfd_open, h.pid, 0);
  if (pidfd < 0) throw new CriuError("restore", sysFailed(`process ${h.pid}`, `pidfd_open (${why})`, pidfd));
  const fd = syscall(NR.pidfd_getfd, pidfd, h.fd, 0);
  closeFd(pidfd);
  if (fd < 0)
    throw new CriuError(
      "restore",
      sysFailed(`process ${h.pid} fd ${h.fd}`, `pidfd_getfd of /dev/pts/${index}'s master (${why})`, fd)
    );
  try {
    use(fd);
  } finally {
    closeFd(fd);
  }
}

/** TIOCSPTLCK(1) on the master process h.pid holds at h.fd, through a copy of it: the lock is the
 *  terminal's, not the file description's. */
function relockPty(h: { pid: number; fd: number }, index: number) {
  withMasterCopy(h, index, "pty lock", (fd) => {
    const r = syscall(NR.ioctl, fd, IOC.TIOCSPTLCK, addr(new Int32Array([1])));
    if (r < 0)
      throw new CriuError(
        "restore",
        sysFailed(`process ${h.pid} fd ${h.fd}`, `TIOCSPTLCK of /dev/pts/${index}'s master`, r)
      );
  });
  log.debug(`/dev/pts/${index}: its master is locked again, as dumped`);
}

/** orphan-pts-master: a copy of the new master sent to the caller. */
function handOverPtsMaster(hooks: Hooks | undefined, h: { pid: number; fd: number }, index: number) {
  withMasterCopy(h, index, "orphan-pts-master", (fd) => runHook(hooks, "orphan-pts-master", { pid: h.pid, fd }));
  log.info(`/dev/pts/${index}: its new master was handed to the caller`);
}

/**
 * A container's terminal (runc's --console-socket): a slave on the container's own devpts whose
 * master is outside the tree (the runtime's). Dumped as the slave alone; at restore a new pair is
 * made in the restored devpts and its master handed to the caller (orphan-pts-master), as criu does.
 * Output the container wrote and the old master holder has not read stays readable there.
 */
function containerPts(fdPath: string, opts: DumpOpts): boolean {
  if (!opts.nsMounts) return false;
  try {
    const mnt = Number(/^mnt_id:\s*(\d+)/m.exec(readFileSync(fdPath.replace("/fd/", "/fdinfo/"), "latin1"))?.[1]);
    return opts.nsMounts.has(mnt);
  } catch {
    return false;
  }
}

/**
 * Before the tree's fds: which pty masters the tree holds, which session leader owns each
 * terminal and its foreground process group (numbered as the images number them, as CRIU keeps
 * it); a pty of the tree that is a controlling terminal is noted (restore makes it so through the
 * leader's own fd on it).
 */
function ttyDumpBegin(tree: DumpTree, opts: DumpOpts): TtyDump {
  const s: TtyDump = { masters: ptyMasters(tree.pids, opts.links), sessions: new Map(), foreground: new Map() };
  for (const p of tree.pids) {
    const st = readStat(p);
    if (st.sid !== p || !st.ttyNr) continue;
    s.sessions.set(st.ttyNr, tree.vpid(p));
    const tpgid = Number(st.fields[8 - 3]);
    const major = (st.ttyNr >> 8) & 0xfff,
      minor = (st.ttyNr & 0xff) | ((st.ttyNr >> 12) & 0xfff00);
    const index = major >= 136 && major <= 143 ? (major - 136) * 256 + minor : -1;
    const member = tpgid > 0 ? tree.pids.find((q) => readStat(q).pgid === tpgid) : undefined;
    if (member !== undefined) s.foreground.set(st.ttyNr, tree.vpgid(member));
    // a foreground group no process of the tree is in (its last member exited) could only come
    // back as another group: the leader's own, which TIOCSCTTY puts in the foreground
    else if (tpgid > 0 && index >= 0 && s.masters.has(index))
      refuse(
        "dump",
        `process ${p}`,
        "tty-foreground",
        `process group ${tpgid} in the foreground of /dev/pts/${index}, with no process of the tree in it`
      );
    if (index >= 0 && s.masters.has(index) && !fdLinks(p).some(([, t]) => t === `/dev/pts/${index}`)) {
      noteCtty(
        tree.files,
        tree.images,
        tree.files.statRoot,
        index,
        tree.vpid(p),
        `process ${p}`,
        s.foreground.get(st.ttyNr) ?? 0
      );
    }
  }
  if (s.masters.size)
    log.debug(
      `tty: the tree holds the masters of pts ${[...s.masters].join(", ")}; ${s.sessions.size} controlling terminal(s)`
    );
  return s;
}

/** What one dump knows about the tree's terminals (ttyDumpBegin). */
interface TtyDump {
  /** pts indexes whose master is in the tree */
  masters: Set<number>;
  /** the session (images' numbering) of each slave that is a controlling terminal (tty_nr -> sid) */
  sessions: Map<number, number>;
  /** the foreground process group (images' numbering) of each of those terminals (tty_nr -> pgid) */
  foreground: Map<number, number>;
}

export const ttyKind: FdKind<TtyDump> = {
  name: "pseudo terminal",
  type: fd_types.TTY,
  dumpBegin: ttyDumpBegin,
  match: (target, _st, path, opts, _copy, s) =>
    target === "/dev/ptmx" ||
    target === "/dev/pts/ptmx" ||
    (/^\/dev\/pts\/\d+$/.test(target) && (s.masters.has(Number(target.slice(9))) || containerPts(path, opts))),
  dump(ctx, s) {
    const master = !ctx.target.startsWith("/dev/pts/") || ctx.target === "/dev/pts/ptmx";
    const index = master ? Number(/tty-index:\s*(\d+)/.exec(ctx.fdinfoText)?.[1] ?? NaN) : Number(ctx.target.slice(9));
    if (!Number.isInteger(index))
      throw new CriuError("files", `${ctx.where}: cannot tell the index of pty ${ctx.target}`);
    // bytes waiting to be read on this side are not saved: refuse rather than lose them
    const inq = new Int32Array(1);
    if (syscall(NR.ioctl, ctx.grab(), 0x541b /* TIOCINQ */, addr(inq)) === 0 && inq[0] > 0)
      refuse(
        "files",
        ctx.where,
        "tty-queued",
        `${inq[0]} bytes unread on ${master ? "the master" : `/dev/pts/${index}`}`
      );
    // packet mode (a master's) and exclusive mode (either end's) are not restored: refused
    const set = (req: number) => {
      const v = new Int32Array(1);
      return syscall(NR.ioctl, ctx.grab(), req, addr(v)) === 0 && v[0] !== 0;
    };
    if (master && set(IOC.TIOCGPKT)) refuse("files", ctx.where, "tty-mode", "packet mode on the master");
    if (set(IOC.TIOCGEXCL))
      refuse("files", ctx.where, "tty-mode", `exclusive mode on ${master ? "the master" : `/dev/pts/${index}`}`);
    // CRIU's ids: (index << 1) + 1 for the master, index << 1 for the slave (CRIU pairs them so)
    const infoId = index * 2 + (master ? 1 : 0);
    const key = `ttyinfo:${infoId}`;
    if (!ctx.files.byKey.has(key)) {
      ctx.files.byKey.set(key, infoId);
      const fd = ctx.grab();
      // termios and window size of the pair: on a master these ioctls reach the slave side
      const termios = termiosOf(ioctlBuf(fd, IOC.TCGETS2, 44, `${ctx.where}: TCGETS2`));
      // the locked bits (TIOCSLCKTRMIOS): CRIU 4.2 refuses a pty whose entry lacks them
      const termiosLocked = termiosOf(ioctlBuf(fd, IOC.TIOCGLCKTRMIOS, 36, `${ctx.where}: TIOCGLCKTRMIOS`));
      const ws = new DataView(ioctlBuf(fd, IOC.TIOCGWINSZ, 8, `${ctx.where}: TIOCGWINSZ`).buffer);
      let locked = false;
      if (master)
        locked =
          new DataView(ioctlBuf(fd, IOC.TIOCGPTLCK, 4, `${ctx.where}: TIOCGPTLCK`).buffer).getInt32(0, true) !== 0;
      // the session whose controlling terminal the pair is (from the tree's stat tty_nr) and its
      // foreground group, on both entries as CRIU writes them (CRIU 4.2's restore takes the master's)
      const sid = s.sessions.get(ptsRdev(index)) ?? 0,
        pgrp = sid ? (s.foreground.get(ptsRdev(index)) ?? 0) : 0;
      ctx.images.add("tty-info.img", "TTY_INFO", S.tty_info_entrySchema, {
        id: infoId,
        type: 1 /* PTY */,
        locked,
        exclusive: false,
        packetMode: false,
        sid,
        pgrp,
        rdev: master ? PTMX_RDEV : ptsRdev(index),
        termios,
        termiosLocked,
        winsize: {
          wsRow: ws.getUint16(0, true),
          wsCol: ws.getUint16(2, true),
          wsXpixel: ws.getUint16(4, true),
          wsYpixel: ws.getUint16(6, true),
        },
        pty: { index },
        // the slave's owner (chown()ed by a login program, or the opener of /dev/ptmx): given back at restore
        ...(master ? {} : { uid: Number(ctx.st.uid), gid: Number(ctx.st.gid) }),
      });
    }
    // a master whose slave was opened and closed again (no fd anywhere holds it: the master reads
    // EIO and polls POLLHUP, unlike one whose slave was never opened): noted as a slave entry no
    // file uses, which restore opens and closes once (CRIU 4.2 writes none and loses the state)
    if (master && !ctx.files.byKey.has(`ttyinfo:${index * 2}`)) {
      const pfd = new Int32Array([ctx.grab(), 0x1 /* POLLIN */]);
      if (syscall(NR.poll, addr(pfd), 1, 0) === 1 && new Int16Array(pfd.buffer)[3] & 0x10 /* POLLHUP */) {
        const st = statSync(`${ctx.files.statRoot}/dev/pts/${index}`);
        ctx.images.add(
          "tty-info.img",
          "TTY_INFO",
          S.tty_info_entrySchema,
          slaveInfo(ctx.grab(), index, 0, 0, st.uid, st.gid, ctx.where)
        );
        ctx.files.byKey.set(`ttyinfo:${index * 2}`, index * 2);
        log.debug(`${ctx.where}: /dev/pts/${index} was opened and closed again (its master polls POLLHUP): noted`);
      }
    }
    // as CRIU: the terminal's path in a regular-file entry the tty entry names (regf_id); CRIU 4.2
    // refuses a tty without one ("TTY w/o regfile"), criu-bun's restore opens by index
    const regfId = ctx.files.add(null, (id) => ({
      id,
      type: 1 /* REG */,
      reg: regEntry(id, ctx.target, ctx.flags, 0n, undefined, undefined),
    }));
    return ctx.files.add(null, (id) => ({
      id,
      type: 11,
      tty: { id, ttyInfoId: infoId, flags: ctx.flags, fown: FOWN0, regfId },
    }));
  },
  restore(ctx, f) {
    const t = f.tty!;
    const infos = cachedImage(ctx, "tty-info.img", "TTY_INFO");
    const info = infos.find((i) => i.id === t.ttyInfoId);
    if (!info?.pty) throw new CriuError("restore", `${ctx.where}: tty-info ${t.ttyInfoId} is not in tty-info.img`);
    const index = info.pty.index,
      master = info.rdev === PTMX_RDEV,
      inj = ctx.inj;
    const key = `pty:${index}` as const;
    if (!ctx.tree.held.has(key)) {
      // made already when the mounts needed its slave (ptyEarly: runc's /dev/console bind)
      const early = ctx.tree.held.has(`ptyEarly:${index}`) ? ctx.fdFrom(`ptyEarly:${index}`)! : -1;
      let m = early;
      if (early < 0) {
        // /dev/ptmx, or a container's devpts's own ptmx where its /dev has none (a plain directory)
        let ptmx = "/dev/ptmx";
        let r = openPts(ctx, ptmx, index, 4096);
        if (r.err === 2 && r.got < 0) r = openPts(ctx, (ptmx = "/dev/pts/ptmx"), index, 4096);
        if (r.err !== undefined)
          throw new CriuError(
            "restore",
            `${ctx.where}: cannot open ${ptmx} to make pty ${index} again: ${errnoText(r.err)}`
          );
        if (r.got !== index) {
          if (r.fd !== undefined) inj.call(NR.close, r.fd);
          throw new CriuError(
            "restore",
            `${ctx.where}: pty ${index} is taken (got ${r.got}); close /dev/pts/${index} first`
          );
        }
        m = r.fd!;
      }
      inj.ok("TIOCSPTLCK", NR.ioctl, m, IOC.TIOCSPTLCK, ctx.scratch(0n, new Uint8Array(4))); // unlock to open the slave
      const slaveInfo = infos.find((i) => i.pty?.index === index && i.rdev !== PTMX_RDEV) ?? info;
      if (slaveInfo.termios) {
        const tb = termiosBytes(slaveInfo.termios, `tty-info.img: pty ${index}`);
        inj.ok(
          tb.length === 44 ? "TCSETS2" : "TCSETS",
          NR.ioctl,
          m,
          tb.length === 44 ? IOC.TCSETS2 : IOC.TCSETS,
          ctx.scratch(0n, tb)
        );
      }
      const lockedTermios = slaveInfo.termiosLocked ?? info.termiosLocked;
      if (lockedTermios)
        inj.ok(
          "TIOCSLCKTRMIOS",
          NR.ioctl,
          m,
          IOC.TIOCSLCKTRMIOS,
          ctx.scratch(0n, termiosBytes(lockedTermios, `tty-info.img: pty ${index} (locked termios)`))
        );
      if (slaveInfo.winsize) {
        const w = slaveInfo.winsize,
          b = new Uint8Array(8),
          dv = new DataView(b.buffer);
        dv.setUint16(0, w.wsRow, true);
        dv.setUint16(2, w.wsCol, true);
        dv.setUint16(4, w.wsXpixel, true);
        dv.setUint16(6, w.wsYpixel, true);
        inj.ok("TIOCSWINSZ", NR.ioctl, m, IOC.TIOCSWINSZ, ctx.scratch(0n, b));
      }
      if (slaveInfo.rdev !== PTMX_RDEV && slaveInfo.uid !== undefined && slaveInfo.gid !== undefined) {
        inj.ok(
          `chown /dev/pts/${index} to ${slaveInfo.uid}:${slaveInfo.gid}`,
          NR.fchownat,
          -100,
          ctx.str(`/dev/pts/${index}`),
          slaveInfo.uid,
          slaveInfo.gid,
          0
        );
        log.debug(`${ctx.where}: /dev/pts/${index} owned by ${slaveInfo.uid}:${slaveInfo.gid} again`);
      }
      const held = ctx.high(m, ctx.where);
      ctx.hold(key, held);
      const masterInfo = infos.find((i) => i.pty?.index === index && i.rdev === PTMX_RDEV);
      if (!masterInfo && !orphanOk(ctx.files, infos, index))
        throw new CriuError("restore", `${ctx.where}: /dev/pts/${index}'s master is not in the images`);
      if (!masterInfo) {
        ctx.tree.orphanPts.set(index, { pid: ctx.pid, vpid: ctx.vpid, fd: held });
        log.info(
          `${ctx.where}: /dev/pts/${index}'s master was outside the tree: a new one is handed to the caller (orphan-pts-master)`
        );
      }
    }
    let fd: number;
    if (master) {
      // another description of the same master: the held one is it (masters are not reopenable)
      const src = ctx.fdFrom(key)!;
      fd = Number(inj.call(NR.fcntl, src, F.DUPFD_CLOEXEC, 0));
      if (fd < 0) throw new CriuError("restore", `${ctx.where}: dup of pty master failed: ${errnoText(-fd)}`);
      if (ctx.tree.held.get(key)!.pid !== ctx.pid) inj.call(NR.close, src);
      fd = ctx.high(fd, ctx.where);
    } else {
      const s = Number(
        inj.call(NR.openat, -100, ctx.str(`/dev/pts/${index}`), (t.flags & ~O.CLOEXEC) | O.NOCTTY | O.CLOEXEC, 0)
      );
      if (s < 0) throw new CriuError("restore", `${ctx.where}: cannot open /dev/pts/${index}: ${errnoText(-s)}`);
      // the session leader whose controlling terminal it was takes it again
      if (info.sid && info.sid === ctx.vpid) inj.call(NR.ioctl, s, IOC.TIOCSCTTY, 0);
      fd = ctx.high(s, ctx.where);
    }
    inj.call(NR.fcntl, fd, F.SETFL, t.flags & (O.NONBLOCK | O.APPEND));
    return fd;
  },
  // a terminal whose master was outside the tree (a container's console): only a caller that takes
  // the new master (RPC orphan_pts_master, runc passing it on to its console socket) can have it
  precheckTree(run) {
    if (!imageExists(run.dir, "tty-info.img")) return;
    const orphans = orphanSlaves(run.files, readImage(run.dir, "tty-info.img", "TTY_INFO"));
    if (orphans.length && !run.hooks?.wants?.("orphan-pts-master")) {
      throw new CriuError(
        "restore",
        `/dev/pts/${orphans[0]}: its master was outside the dumped tree; restoring it needs a caller that takes the new master (orphan_pts_master over RPC)`
      );
    }
  },
  // every process has its files: the new masters of terminals whose master was outside the tree
  // go to the caller, and each session leader takes its controlling terminal again
  restoreFilesDone(run, procs) {
    for (const [index, h] of run.tree.orphanPts) handOverPtsMaster(run.hooks, h, index);
    if (!imageExists(run.dir, "tty-info.img")) return;
    const infos = readImage(run.dir, "tty-info.img", "TTY_INFO");
    for (const p of procs.filter((p) => p.sid === p.vpid)) restoreCtty(p, infos);
    // a slave that was opened and closed again (an entry no file uses, no session's terminal):
    // opened and closed once in its master's holder, so the master reads EIO again
    const used = new Set([...run.files.values()].filter((f) => f.tty).map((f) => f.tty!.ttyInfoId));
    for (const info of infos) {
      if (info.rdev === PTMX_RDEV || !info.pty || info.sid || used.has(info.id)) continue;
      const h = run.tree.held.get(`pty:${info.pty.index}`),
        p = h && procs.find((q) => q.pid === h.pid);
      if (!p) continue; // its master is not in the images: nothing to close it on
      const path = `/dev/pts/${info.pty.index}`;
      const fd = Number(p.inj.call(NR.openat, -100, p.str(path), O.RDWR | O.NOCTTY | O.CLOEXEC, 0));
      if (fd < 0)
        throw new CriuError("restore", sysFailed(`process ${p.vpid}`, `opening ${path} to close it again`, fd));
      p.inj.call(NR.close, fd);
      log.debug(`process ${p.vpid}: ${path} opened and closed again, as dumped`);
    }
    // a master dumped locked (its slave could not be opened) is locked again once every slave of
    // the tree is open and each session leader has its terminal again: restore unlocked it to open them
    for (const info of infos) {
      if (!info.locked || info.rdev !== PTMX_RDEV || !info.pty) continue;
      const h = run.tree.held.get(`pty:${info.pty.index}`);
      if (!h)
        throw new CriuError("restore", `/dev/pts/${info.pty.index}: its locked master is not held by the restore`);
      relockPty(h, info.pty.index);
    }
  },
};

/** A process under restore, as the pty helpers reach into it. */
interface PtyTarget {
  inj: Injector;
  mem: RemoteMem;
  str(s: string): bigint;
  scratch(off: bigint, data: Uint8Array): bigint;
}

/**
 * ptmx opened in the target until the kernel hands out pts INDEX or a later one (those before it
 * are closed again), at most TRIES times: fd, the master it stopped at (got its index); err, the
 * errno of an open that failed; neither when every try gave an earlier index.
 */
function openPts(t: PtyTarget, ptmx: string, index: number, tries: number): { fd?: number; err?: number; got: number } {
  const extra: number[] = [];
  let got = -1;
  try {
    for (let i = 0; i < tries; i++) {
      const m = Number(t.inj.call(NR.openat, -100, t.str(ptmx), O.RDWR | O.NOCTTY | O.CLOEXEC, 0));
      if (m < 0) return { err: -m, got };
      const ib = t.scratch(0n, new Uint8Array(4));
      t.inj.ok("TIOCGPTN", NR.ioctl, m, IOC.TIOCGPTN, ib);
      got = new DataView(t.mem.read(ib, 4).buffer).getInt32(0, true);
      if (got >= index) return { fd: m, got };
      extra.push(m);
    }
    return { got };
  } finally {
    for (const e of extra) t.inj.call(NR.close, e);
  }
}

/** The restored root task a pts is made in early (restoreEarlyPty): its master is held from floor up. */
export type EarlyPtyTarget = PtyTarget & { pid: number; vpid: number; tree: TreeFiles; floor: number };

/**
 * A pty pair made while the mounts are built (a bind of its slave, runc's /dev/console, needs the
 * slave to exist): ptmx opened until the kernel gives INDEX, unlocked, the master held above FLOOR
 * for the tty restore (ttyKind.restore takes it under ptyEarly:INDEX).
 */
export function restoreEarlyPty(t: EarlyPtyTarget, ptmx: string, index: number) {
  const floor = t.floor;
  const inj = t.inj;
  const r = openPts(t, ptmx, index, index + 65);
  if (r.err !== undefined) throw new CriuError("restore", sysFailed(`process ${t.vpid}`, `opening ${ptmx}`, r.err));
  if (r.got !== index) {
    if (r.fd !== undefined) inj.call(NR.close, r.fd);
    throw new CriuError("restore", `process ${t.vpid}: pty ${index} of the restored devpts is taken (got ${r.got})`);
  }
  const m = r.fd!;
  inj.ok("TIOCSPTLCK", NR.ioctl, m, IOC.TIOCSPTLCK, t.scratch(0n, new Uint8Array(4)));
  const h = Number(inj.call(NR.fcntl, m, F.DUPFD_CLOEXEC, floor));
  inj.call(NR.close, m);
  if (h < 0) throw new CriuError("restore", sysFailed(`process ${t.vpid}`, `F_DUPFD of pty ${index}'s master`, h));
  t.tree.held.set(`ptyEarly:${index}`, { pid: t.pid, vpid: t.vpid, fd: h });
  const l = t.tree.toClose.get(t.pid) ?? [];
  l.push(h);
  t.tree.toClose.set(t.pid, l);
  log.debug(`pts ${index} made early (its slave is bind-mounted), master fd ${h} held`);
}

/** tty-info entries of slaves whose master no file of the tree opens: terminals of a runtime's console */
function orphanSlaves(files: Map<number, S.file_entry>, infos: S.tty_info_entry[]): number[] {
  const masters = new Set(infos.filter((i) => i.rdev === PTMX_RDEV && i.pty).map((i) => i.pty!.index));
  const used = new Set([...files.values()].filter((f) => f.tty).map((f) => f.tty!.ttyInfoId));
  return [
    ...new Set(
      infos
        .filter((i) => i.rdev !== PTMX_RDEV && i.pty && used.has(i.id) && !masters.has(i.pty.index))
        .map((i) => i.pty!.index)
    ),
  ];
}
function orphanOk(files: Map<number, S.file_entry>, infos: S.tty_info_entry[], index: number) {
  return orphanSlaves(files, infos).includes(index);
}
