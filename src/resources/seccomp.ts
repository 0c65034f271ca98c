// seccomp and no_new_privs, both directions: a thread's filters read at dump (PTRACE_SECCOMP_*),
// seccomp.img (every chain, shared prefixes once, as CRIU's), and the filters installed again at
// restore through the restored thread's own injected syscalls.
import { ptrace, PTRACE, PTRACE_O } from "../sys/ptrace";
import { addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { PR } from "../sys/flags";
import { errnoText } from "../sys/errno";
import { readImage, imageExists, writeImage, plainEntry } from "../images/image";
import * as S from "../images/schemas";
import { isFieldSet } from "@bufbuild/protobuf";
import type { Injector } from "../ptrace/inject";
import { CriuError, log } from "../log";

/** one filter of a chain: classic BPF program bytes and its SECCOMP_FILTER_FLAG_* */
export interface SeccompFilter {
  filter: Uint8Array;
  flags: number;
}

const PTRACE_SECCOMP_GET_METADATA = 0x420d;
const SECCOMP_MODE_STRICT = 1,
  SECCOMP_SET_MODE_FILTER = 1;
const FILTER_FLAG_LOG = 2,
  FILTER_FLAG_SPEC_ALLOW = 4;
/** what fits the restored thread's scratch area after the sock_fprog (2048 instructions) */
const MAX_FILTER_BYTES = 16384;

// ---------- dump ----------

/** A thread's seccomp filters, oldest first: PTRACE_SECCOMP_GET_FILTER counts from the newest. */
export function dumpSeccompFilters(tid: number): SeccompFilter[] {
  const out: SeccompFilter[] = [];
  for (let i = 0; ; i++) {
    const n = ptrace(PTRACE.SECCOMP_GET_FILTER, tid, i, 0);
    if (n === -2 /* ENOENT: no more */) break;
    if (n < 0) throw new CriuError("dump", `thread ${tid}: PTRACE_SECCOMP_GET_FILTER(${i}) failed: ${errnoText(-n)}`);
    const buf = new Uint8Array(n * 8);
    const r = ptrace(PTRACE.SECCOMP_GET_FILTER, tid, i, addr(buf));
    if (r !== n) throw new CriuError("dump", `thread ${tid}: seccomp filter ${i} changed while being read`);
    const md = new BigUint64Array([BigInt(i), 0n]);
    const m = ptrace(PTRACE_SECCOMP_GET_METADATA, tid, 16, addr(md));
    out.push({ filter: buf, flags: m >= 0 ? Number(md[1]) : 0 });
    log.debug(
      `thread ${tid}: seccomp filter ${i} (newest first): ${n} instructions, flags 0x${(m >= 0 ? Number(md[1]) : 0).toString(16)}`
    );
  }
  return out.reverse();
}

/** seccomp.img: every thread's filter chain, shared prefixes stored once (prev = index). */
export class SeccompChains {
  filters: { filter: Uint8Array; prev?: number; flags: number }[] = [];
  /** chain oldest first; returns the index of its newest filter (the thread's seccomp_filter) */
  add(chain: SeccompFilter[]): number {
    let prev: number | undefined;
    for (const f of chain) {
      const same = (x: { filter: Uint8Array; prev?: number }) =>
        x.prev === prev && x.filter.length === f.filter.length && x.filter.every((b, i) => b === f.filter[i]);
      let i = this.filters.findIndex(same);
      if (i < 0) {
        i = this.filters.length;
        this.filters.push({ filter: f.filter, ...(prev !== undefined ? { prev } : {}), flags: f.flags });
      }
      prev = i;
    }
    return prev!;
  }
  /** written by every dump, even without filters, as CRIU does */
  write(dir: string) {
    writeImage(dir, "seccomp.img", "SECCOMP", [plainEntry(S.seccomp_entrySchema, { seccompFilters: this.filters })]);
    log.debug(`seccomp.img: ${this.filters.length} filter(s)`);
  }
}

// ---------- restore ----------

/** seccomp.img's filters, each thread's reference checked (threads point at their newest filter). */
export function readSeccomp(
  dir: string,
  threads: Iterable<{ pid: number; tc?: S.thread_core_entry }>
): S.seccomp_filter[] {
  const filters = imageExists(dir, "seccomp.img")
    ? (readImage(dir, "seccomp.img", "SECCOMP")[0]?.seccompFilters ?? [])
    : [];
  for (const { pid, tc } of threads) {
    if (tc?.seccompMode === 2 && (tc.seccompFilter === undefined || tc.seccompFilter >= filters.length)) {
      throw new CriuError(
        "restore",
        `${dir}/core-${pid}.img: seccomp filter ${tc.seccompFilter} is not in seccomp.img`
      );
    }
  }
  return filters;
}

/** A thread's chain, oldest first, from its newest filter's index. */
function chainOf(filters: S.seccomp_filter[], newest: number | undefined): S.seccomp_filter[] {
  const chain: S.seccomp_filter[] = [];
  for (let i: number | undefined = newest; i !== undefined; ) {
    const f = filters[i];
    if (!f) throw new CriuError("restore", `seccomp.img: filter ${i} is referenced but not there`);
    chain.unshift(f);
    i = isFieldSet(f, S.seccomp_filterSchema.field.prev) ? f.prev : undefined; // proto2: an unset prev reads as 0
    if (chain.length > filters.length) throw new CriuError("restore", "seccomp.img: the filter chain loops");
  }
  return chain;
}

/**
 * no_new_privs and seccomp filters (oldest first, as installed) of one restored thread, while it
 * is still root. Our own later injections are kept out of the filters' reach with
 * PTRACE_O_SUSPEND_SECCOMP. `scratch(off, bytes)` copies bytes into the thread's scratch page.
 */
export function restoreSeccomp(
  thread: { tid: number; vtid: number; inj: Injector; scratch: (off: bigint, data: Uint8Array) => bigint },
  tc: S.thread_core_entry,
  filters: S.seccomp_filter[]
) {
  const { tid, vtid, inj, scratch } = thread;
  // criu-bun's own field, or CRIU 4.2's creds.no_new_privs
  const nnp = tc.noNewPrivs || !!tc.creds?.noNewPrivs;
  if (!tc.seccompMode && !nnp) return;
  const r = ptrace(
    PTRACE.SETOPTIONS,
    tid,
    0,
    PTRACE_O.EXITKILL | PTRACE_O.TRACEFORK | PTRACE_O.TRACECLONE | PTRACE_O.TRACESYSGOOD | PTRACE_O.SUSPEND_SECCOMP
  );
  if (r < 0) throw new CriuError("restore", `thread ${vtid}: cannot suspend seccomp while restoring: ${errnoText(-r)}`);
  if (nnp) inj.ok("prctl(PR_SET_NO_NEW_PRIVS)", NR.prctl, PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (tc.seccompMode === 2) {
    const chain = chainOf(filters, tc.seccompFilter);
    for (const [k, f] of chain.entries()) {
      if (!f.filter.length || f.filter.length > MAX_FILTER_BYTES || f.filter.length % 8)
        throw new CriuError(
          "restore",
          `thread ${vtid}: a seccomp filter of ${f.filter.length} bytes is not supported (at most ${MAX_FILTER_BYTES / 8} instructions)`
        );
      const code = scratch(2048n, f.filter);
      const prog = new DataView(new ArrayBuffer(16));
      prog.setUint16(0, f.filter.length / 8, true);
      prog.setBigUint64(8, code, true);
      const flags = (f.flags ?? 0) & (FILTER_FLAG_LOG | FILTER_FLAG_SPEC_ALLOW);
      inj.ok(
        "seccomp(SET_MODE_FILTER)",
        NR.seccomp,
        SECCOMP_SET_MODE_FILTER,
        flags,
        scratch(0n, new Uint8Array(prog.buffer))
      );
      log.debug(
        `thread ${vtid}: seccomp filter ${k + 1}/${chain.length} installed (${f.filter.length / 8} instructions, flags 0x${flags.toString(16)})`
      );
    }
  } else if (tc.seccompMode === 1) {
    inj.ok("prctl(PR_SET_SECCOMP, strict)", NR.prctl, PR.SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0);
  }
}
