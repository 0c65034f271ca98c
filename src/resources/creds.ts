// Credentials and capabilities of a thread, both directions: read at dump from /proc (uids, gids,
// groups, the five capability sets) plus the securebits the dump injects PR_GET_SECUREBITS for;
// restored in the order the kernel allows through the thread's own injected syscalls.
import { readFileSync } from "../sys/fs";
import { readStatus } from "../sys/proc";
import { NR } from "../sys/nr";
import { PR } from "../sys/flags";
import { dataWords, mustSucceed, type InCall, type Injector } from "../ptrace/inject";
import type * as S from "../images/schemas";
import { log } from "../log";

const SECBIT_KEEP_CAPS = 0x10,
  SECBIT_KEEP_CAPS_LOCKED = 0x20;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

// ---------- dump ----------

function capWords(hex: string | undefined): number[] {
  const v = hex ? BigInt("0x" + hex) : 0n;
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

/** creds_entry of a thread (secbits: what PR_GET_SECUREBITS answered in the thread; st: its
 *  /proc status, read after the injected calls) */
export function dumpCreds(pid: number, tid: number, secbits: number, st = readStatus(pid, tid)) {
  const [uid, euid, suid, fsuid] = st.Uid.split(/\s+/).map(Number);
  const [gid, egid, sgid, fsgid] = st.Gid.split(/\s+/).map(Number);
  const groups = (st.Groups ?? "").split(/\s+/).filter(Boolean).map(Number);
  const c = {
    uid,
    gid,
    euid,
    egid,
    suid,
    sgid,
    fsuid,
    fsgid,
    capInh: capWords(st.CapInh),
    capPrm: capWords(st.CapPrm),
    capEff: capWords(st.CapEff),
    capBnd: capWords(st.CapBnd),
    capAmb: capWords(st.CapAmb),
    secbits,
    groups,
  };
  log.debug(
    `thread ${tid}: uids ${uid}/${euid}/${suid}/${fsuid} gids ${gid}/${egid}/${sgid}/${fsgid} groups [${groups.join(",")}] cap eff ${st.CapEff} bnd ${st.CapBnd} amb ${st.CapAmb ?? "0"} secbits 0x${secbits.toString(16)}`
  );
  return c;
}

// ---------- restore ----------

let lastCapCache = -1;
/** Highest capability number this kernel knows. */
function capLast(): number {
  if (lastCapCache < 0) lastCapCache = Number(readFileSync("/proc/sys/kernel/cap_last_cap", "latin1").trim());
  return lastCapCache;
}

/**
 * Credentials of one thread, in the order the kernel allows: bounding set and securebits while
 * we are still all-powerful root, groups and gids, uids (capabilities kept across the switch),
 * then the capability sets themselves, then the ambient ones (cap_amb). `scratch(off, bytes)`
 * copies bytes into the thread's scratch page.
 */
export function restoreCreds(
  thread: { vtid: number; inj: Injector; batchData: (calls: InCall[]) => void },
  c: S.creds_entry
) {
  const { vtid, inj, batchData } = thread;
  const lastCap = capLast();
  const full = lastCap >= 32 ? [0xffffffff, 2 ** (lastCap - 31) - 1] : [2 ** (lastCap + 1) - 1, 0];
  const isFull = (w: number[]) => w[0] >>> 0 === full[0] >>> 0 && (w[1] ?? 0) === full[1];
  const rootish =
    c.uid === 0 &&
    c.euid === 0 &&
    c.suid === 0 &&
    c.gid === 0 &&
    c.egid === 0 &&
    c.sgid === 0 &&
    c.fsuid === 0 &&
    c.fsgid === 0;
  const amb = c.capAmb ?? [];
  if (
    rootish &&
    !c.groups.length &&
    !c.secbits &&
    isFull(c.capBnd) &&
    isFull(c.capPrm) &&
    isFull(c.capEff) &&
    !(c.capInh[0] || c.capInh[1]) &&
    !(amb[0] || amb[1])
  ) {
    log.debug(`thread ${vtid}: root with every capability, as criu-bun: credentials left as they are`);
    return;
  }
  // one stop of the thread for all of them, in this order; each result checked in order, the
  // first failure named as inj.ok names it (the calls after it run too, in a thread whose restore
  // then fails: it is killed)
  const calls: InCall[] = [];
  const ok = (name: string, nr: number, data: bigint[], args: (at: bigint) => (number | bigint)[]) =>
    calls.push({
      nr,
      data,
      args,
      check: mustSucceed(inj.who, name),
    });
  const any = (nr: number, ...args: (number | bigint)[]) =>
    calls.push({ nr, data: [], args: () => args, check: () => {} });
  for (let cap = 0; cap <= lastCap; cap++) {
    const inBnd = ((c.capBnd[cap >> 5] ?? 0) >>> (cap & 31)) & 1;
    if (!inBnd) ok(`prctl(PR_CAPBSET_DROP, ${cap})`, NR.prctl, [], () => [PR.CAPBSET_DROP, cap]);
  }
  if (c.secbits) ok("prctl(PR_SET_SECUREBITS)", NR.prctl, [], () => [PR.SET_SECUREBITS, c.secbits]);
  ok("setgroups", NR.setgroups, dataWords(new Uint8Array(new Uint32Array(c.groups).buffer)), (at) => [
    c.groups.length,
    at,
  ]);
  ok("setresgid", NR.setresgid, [], () => [c.gid, c.egid, c.sgid]);
  if (!(c.secbits & SECBIT_KEEP_CAPS_LOCKED)) any(NR.prctl, PR.SET_KEEPCAPS, 1);
  ok("setresuid", NR.setresuid, [], () => [c.uid, c.euid, c.suid]);
  any(NR.setfsgid, c.fsgid);
  any(NR.setfsuid, c.fsuid);
  // capset: header {version 3, pid 0}, then two data words {effective, permitted, inheritable}
  const caps = new Uint32Array([
    LINUX_CAPABILITY_VERSION_3,
    0,
    c.capEff[0] ?? 0,
    c.capPrm[0] ?? 0,
    c.capInh[0] ?? 0,
    c.capEff[1] ?? 0,
    c.capPrm[1] ?? 0,
    c.capInh[1] ?? 0,
  ]);
  ok("capset", NR.capset, dataWords(new Uint8Array(caps.buffer)), (at) => [at, at + 8n]);
  if (!(c.secbits & SECBIT_KEEP_CAPS_LOCKED)) any(NR.prctl, PR.SET_KEEPCAPS, c.secbits & SECBIT_KEEP_CAPS ? 1 : 0); // keep-caps back as it was
  for (let cap = 0; cap <= lastCap; cap++) {
    if (((amb[cap >> 5] ?? 0) >>> (cap & 31)) & 1)
      ok(`prctl(PR_CAP_AMBIENT_RAISE, ${cap})`, NR.prctl, [], () => [PR.CAP_AMBIENT, PR.CAP_AMBIENT_RAISE, cap, 0, 0]);
  }
  // said once the last result is checked (the caller may run these in a stop with its own calls)
  const last = calls[calls.length - 1],
    check = last.check;
  last.check = (r) => {
    check(r);
    log.debug(
      `thread ${vtid}: credentials restored (uid ${c.uid}, gid ${c.gid}, ${c.groups.length} group(s), securebits 0x${c.secbits.toString(16)})`
    );
  };
  batchData(calls);
}
