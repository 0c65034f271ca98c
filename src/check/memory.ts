// Memory probes run inside criu-bun itself, on mappings made for the probe and unmapped after.
import {
  UFFDIO_API,
  UFFDIO_REGISTER,
  UFFDIO_WRITEPROTECT,
  UFFD_USER_MODE_ONLY,
  UFFD_FEATURE,
  UFFDIO_REGISTER_MODE,
  UFFDIO_UNREGISTER,
  uffdCopy,
} from "../sys/uffd";
import { syscall, addr, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { PR } from "../sys/flags";
import { errnoText } from "../sys/errno";
import { readVmas, readLink } from "../sys/proc";
import { vmWrite, openFd, pread, O, PAGE_IS } from "../sys/mem";
import { Missing, need, sys, hex, withFds, memfd, MFD, type Probe } from "./probe";
import { pagemapScan } from "./ptrace";

const PAGE = 4096n;

/** mmap anonymous private RW memory in criu-bun; fn gets its address; unmapped afterwards. */
function withMapping<T>(len: bigint, fn: (a: bigint) => T): T {
  const r = syscall(NR.mmap, 0, len, 3, 0x22, -1, 0);
  need(r >= 0 || r < -4095, `mmap: ${errnoText(-r)}`);
  const a = BigInt.asUintN(64, BigInt(r));
  try {
    return fn(a);
  } finally {
    syscall(NR.munmap, a, len);
  }
}

/** /proc/self/map_files/START-END links to the file a mapping maps. */
function mapFiles(): string {
  const v = readVmas(process.pid).find((m) => m.path.startsWith("/") && m.inode > 0);
  need(v, "no file mapping to look at");
  const link = `/proc/self/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
  let target: string;
  try {
    target = readLink(link);
  } catch (e) {
    throw new Missing(`${link}: ${(e as Error).message}`);
  }
  need(target === v.path, `${link} points to ${target}, maps says ${v.path}`);
  return v.path;
}

/** memfd_create: a named anonymous file that holds data. */
function memfdCreate(): string {
  return withFds((fds) => {
    const fd = memfd("criu-bun-check");
    fds.push(fd);
    const data = cstr("criu-bun");
    need(syscall(NR.pwrite64, fd, addr(data), data.length, 0) === data.length, "write to the memfd failed");
    const back = new Uint8Array(data.length);
    need(pread(fd, back, 0) === data.length && back.every((b, i) => b === data[i]), "memfd lost its data");
    const link = readLink(`/proc/self/fd/${fd}`);
    need(link.startsWith("/memfd:criu-bun-check"), `memfd shows as ${link}`);
    return link;
  });
}

function memfdHugetlb(): string {
  return withFds((fds) => {
    const n = cstr("criu-bun-check-huge");
    const fd = syscall(NR.memfd_create, addr(n), MFD.CLOEXEC | MFD.HUGETLB);
    need(fd >= 0, `memfd_create(MFD_HUGETLB): ${errnoText(-fd)}`);
    fds.push(fd);
    return readLink(`/proc/self/fd/${fd}`);
  });
}

/** PR_SET_MM_MAP_SIZE: the one-call mm restore interface (struct prctl_mm_map, 104 bytes). */
function prctlMmMap(): string {
  const size = new Uint32Array(1);
  sys("prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)", NR.prctl, PR.SET_MM, PR.SET_MM_MAP_SIZE, addr(size), 0, 0);
  need(size[0] === 104, `struct prctl_mm_map is ${size[0]} bytes, expected 104`);
  return "104 bytes";
}

const NONCOOP =
  UFFD_FEATURE.EVENT_FORK | UFFD_FEATURE.EVENT_REMAP | UFFD_FEATURE.EVENT_REMOVE | UFFD_FEATURE.EVENT_UNMAP;

/** A userfaultfd after the UFFDIO_API handshake asking for `features`; returns fd and the kernel's feature set. */
function uffdOpen(features: number, fds: number[]): { fd: number; features: number } {
  const fd = syscall(
    NR.userfaultfd,
    O.CLOEXEC | O.NONBLOCK | (features & UFFD_FEATURE.EVENT_FORK ? 0 : UFFD_USER_MODE_ONLY)
  );
  if (fd === -38) throw new Missing("no userfaultfd system call");
  need(fd >= 0, `userfaultfd: ${errnoText(-fd)}`);
  fds.push(fd);
  const api = new BigUint64Array([0xaan, BigInt(features), 0n]);
  const r = syscall(NR.ioctl, fd, UFFDIO_API, addr(api));
  need(r === 0, `UFFDIO_API with features ${hex(features)}: ${errnoText(-r)}`);
  return { fd, features: Number(api[1]) };
}

function uffd(): string {
  return withFds((fds) => `features ${hex(uffdOpen(0, fds).features)}`);
}

/** Non-cooperative userfaultfd: fork/remap/remove/unmap events can be asked for. */
function uffdNoncoop(): string {
  return withFds((fds) => {
    const all = uffdOpen(0, fds).features;
    need(
      (all & NONCOOP) === NONCOOP,
      `the kernel offers features ${hex(all)} without all of fork/remap/remove/unmap events`
    );
    uffdOpen(NONCOOP, fds);
    return "event features accepted";
  });
}

/**
 * What a lazy restore needs (src/resources/lazymem.ts): a userfaultfd with the fork, remap, remove and
 * unmap events, a page registered in missing mode and filled by UFFDIO_COPY reads back as copied, and
 * pidfd_getfd takes an fd out of a process.
 */
function lazyPages(): string {
  return withFds((fds) => {
    const u = uffdOpen(NONCOOP, fds).fd;
    return withMapping(PAGE, (a) => {
      const reg = new BigUint64Array([a, PAGE, BigInt(UFFDIO_REGISTER_MODE.MISSING), 0n]);
      sys("UFFDIO_REGISTER (missing)", NR.ioctl, u, UFFDIO_REGISTER, addr(reg));
      try {
        const page = new Uint8Array(Number(PAGE)).fill(0x5a);
        const c = uffdCopy(u, a, page, 0, page.length);
        need(!c.err && c.copied === page.length, `UFFDIO_COPY: ${errnoText(c.err)}`);
        const back = new Uint8Array(16);
        const mem = openFd("/proc/self/mem", O.RDONLY | O.CLOEXEC);
        fds.push(mem);
        need(
          pread(mem, back, a) === 16 && back.every((b) => b === 0x5a),
          "the page filled by UFFDIO_COPY does not read back"
        );
        const pidfd = syscall(NR.pidfd_open, process.pid, 0);
        need(pidfd >= 0, `pidfd_open: ${errnoText(-pidfd)}`);
        fds.push(pidfd);
        const dup = syscall(NR.pidfd_getfd, pidfd, u, 0);
        need(dup >= 0, `pidfd_getfd: ${errnoText(-dup)}`);
        fds.push(dup);
        return "missing-mode userfaultfd with fork/remap/remove/unmap events, UFFDIO_COPY, pidfd_getfd";
      } finally {
        // before the munmap: its unmap event would wait for this very thread to read it
        syscall(NR.ioctl, u, UFFDIO_UNREGISTER, addr(new BigUint64Array([a, PAGE])));
      }
    });
  });
}

/**
 * Asynchronous uffd write-protect (the soft-dirty replacement): write-protect two written pages,
 * write one again, PAGEMAP_SCAN reports exactly that one as written.
 */
function uffdWpAsync(): string {
  return withFds((fds) => {
    const all = uffdOpen(0, fds).features;
    need(all & UFFD_FEATURE.WP_ASYNC, `no UFFD_FEATURE_WP_ASYNC (kernel features ${hex(all)})`);
    const u = uffdOpen(UFFD_FEATURE.WP_ASYNC, fds);
    return withMapping(2n * PAGE, (a) => {
      const one = new Uint8Array([1]);
      need(
        vmWrite(process.pid, a, one) === 1 && vmWrite(process.pid, a + PAGE, one) === 1,
        "cannot fill the probe pages"
      );
      const reg = new BigUint64Array([a, 2n * PAGE, 2n /* MODE_WP */, 0n]);
      const r = syscall(NR.ioctl, u.fd, UFFDIO_REGISTER, addr(reg));
      need(r === 0, `UFFDIO_REGISTER (write-protect mode): ${errnoText(-r)}`);
      const wp = new BigUint64Array([a, 2n * PAGE, 1n /* MODE_WP */]);
      const w = syscall(NR.ioctl, u.fd, UFFDIO_WRITEPROTECT, addr(wp));
      need(w === 0, `UFFDIO_WRITEPROTECT: ${errnoText(-w)}`);
      need(vmWrite(process.pid, a + PAGE, new Uint8Array([2])) === 1, "write to a write-protected page failed");
      const pm = openFd("/proc/self/pagemap", O.RDONLY | O.CLOEXEC);
      fds.push(pm);
      const regs = pagemapScan(pm, a, a + 2n * PAGE, PAGE_IS.WRITTEN, PAGE_IS.WRITTEN);
      const s = regs.map(([x, y]) => `${(x - a) / PAGE}-${(y - a) / PAGE}`).join(",");
      need(s === "1-2", `pages reported written: ${s || "none"}, expected 1-2`);
      return "page written after write-protect found";
    });
  });
}

/** membarrier(MEMBARRIER_CMD_QUERY) lists the supported commands. */
function membarrier(): string {
  const r = syscall(NR.membarrier, 0, 0, 0);
  need(r >= 0, `membarrier: ${errnoText(-r)}`);
  need(r & 1, `membarrier offers commands ${hex(r)} without MEMBARRIER_CMD_GLOBAL`);
  return `commands ${hex(r)}`;
}

/** The rseq system call exists (a deliberately invalid call gets EINVAL, not ENOSYS). */
function rseq(): string {
  const r = syscall(NR.rseq, 0, 0, 0, 0);
  need(r !== -38, "no rseq system call");
  need(r === -22, `rseq probe call gave ${r < 0 ? errnoText(-r) : r}, expected EINVAL`);
  return "present";
}

/** An AIO ring can be moved with mremap and still works. */
function aioRemap(): string {
  const ctx = new BigUint64Array(1);
  sys("io_setup", NR.io_setup, 16, addr(ctx));
  let cur = ctx[0];
  try {
    const v = readVmas(process.pid).find((m) => m.start === cur);
    need(v && v.path.startsWith("/[aio]"), `no AIO ring at ${hex(cur)}`);
    const len = v.end - v.start;
    const dst = syscall(NR.mmap, 0, len, 3, 0x22, -1, 0);
    need(dst > 0 || dst < -4095, `mmap: ${errnoText(-dst)}`);
    const d = BigInt.asUintN(64, BigInt(dst));
    const m = syscall(NR.mremap, cur, len, len, 3 /* MAYMOVE|FIXED */, d);
    if (m < 0 && m > -4096) {
      syscall(NR.munmap, d, len);
      throw new Missing(`mremap of the AIO ring: ${errnoText(-m)}`);
    }
    cur = d;
    const e = syscall(NR.io_getevents, cur, 0, 1, 0, 0);
    need(e === 0, `io_getevents on the moved ring: ${e < 0 ? errnoText(-e) : e}`);
    return `ring of ${len / PAGE} pages moved`;
  } finally {
    syscall(NR.io_destroy, cur);
  }
}

export const MEMORY_PROBES: Probe[] = [
  { name: "map_files", basic: true, desc: "identify mapped files (/proc/PID/map_files)", run: mapFiles },
  { name: "memfd_create", basic: true, desc: "memfd (restore puppet, memfd mappings)", run: memfdCreate },
  { name: "prctl_mm_map", basic: true, desc: "restore mm fields (PR_SET_MM_MAP)", run: prctlMmMap },
  { name: "memfd_hugetlb", basic: false, desc: "hugetlb memfds", run: memfdHugetlb },
  { name: "uffd", basic: false, desc: "userfaultfd", run: uffd },
  { name: "uffd-noncoop", basic: false, desc: "non-cooperative userfaultfd (lazy pages)", run: uffdNoncoop },
  { name: "lazy_pages", basic: false, desc: "lazy restore (dump/restore --lazy-pages, lazy-pages)", run: lazyPages },
  { name: "uffd_wp_async", basic: false, desc: "dirty tracking with async uffd write-protect", run: uffdWpAsync },
  { name: "membarrier", basic: false, desc: "membarrier system call", run: membarrier },
  { name: "rseq", basic: false, desc: "rseq system call", run: rseq },
  { name: "aio_remap", basic: false, desc: "move AIO rings", run: aioRemap },
];
