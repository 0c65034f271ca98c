// A process's VMAs with their raw vm_flags from a BPF task_vma iterator: no page-table walk (reading
// /proc/PID/smaps walks every page table of the process, tens of ms per GiB resident, only for its
// VmFlags line). The program is assembled here (nine loads and stores, one helper call), loaded once
// per run (BPF_PROG_LOAD, tracing, BPF_TRACE_ITER, attached to the kernel's bpf_iter_task_vma); per
// process one link bound to its leader's tid (BPF_LINK_CREATE with bpf_iter_link_info.task.tid), one
// iterator fd (BPF_ITER_CREATE), read to the end: 24 bytes per VMA (vm_start, vm_end, vm_flags), in
// address order, under the process's mmap lock held for reading. The gate VMA ([vsyscall]) is not
// in the mm's tree, so not in the iterator (it is in maps and smaps).
//
// The byte offsets come from the kernel's BTF (vmlinux's, as /sys/kernel/btf/vmlinux has it): the context's meta and vma
// pointers (struct bpf_iter__task_vma), meta's seq (struct bpf_iter_meta), vm_area_struct's vm_start,
// vm_end and vm_flags (found through the anonymous unions and structs they sit in; each must be 8
// bytes). What the flag bits mean is vmflags.ts's business (a table checked on this kernel).
import { syscall, addr } from "./syscall";
import { NR } from "./nr";
import { errnoText } from "./errno";

const BPF_PROG_LOAD = 5,
  BPF_OBJ_GET_INFO_BY_FD = 15,
  BPF_BTF_GET_FD_BY_ID = 19,
  BPF_BTF_GET_NEXT_ID = 23,
  BPF_LINK_CREATE = 28,
  BPF_ITER_CREATE = 33;
const BPF_PROG_TYPE_TRACING = 26,
  BPF_TRACE_ITER = 28;
const BPF_FUNC_seq_write = 127;
/** union bpf_attr's size for the commands used here (the kernel checks that the rest is zero) */
const ATTR = 144;

/** An error of the BPF source: why it cannot be used (the caller falls back to smaps). */
export class BpfVmaError extends Error {}

interface Layout {
  /** BTF id of FUNC bpf_iter_task_vma (attach_btf_id) */
  funcId: number;
  ctxMeta: number;
  ctxVma: number;
  metaSeq: number;
  vmStart: number;
  vmEnd: number;
  vmFlags: number;
}

const KIND = { INT: 1, PTR: 2, STRUCT: 4, UNION: 5, TYPEDEF: 8, VOLATILE: 9, CONST: 10, RESTRICT: 11, FUNC: 12 };

/**
 * The kernel's own BTF (vmlinux), through bpf(2): BPF_BTF_GET_NEXT_ID, BPF_BTF_GET_FD_BY_ID and
 * BPF_OBJ_GET_INFO_BY_FD copy it in one call (reading /sys/kernel/btf/vmlinux takes one read per
 * 4 KiB: 1,300 reads for this kernel's 5 MiB, 40-500 ms).
 */
function vmlinuxBtf(): Uint8Array {
  const attr = new Uint8Array(ATTR),
    dv = new DataView(attr.buffer);
  const info = new Uint8Array(32),
    iv = new DataView(info.buffer);
  const name = new Uint8Array(64);
  let id = 0;
  for (let tries = 0; tries < 4096; tries++) {
    attr.fill(0);
    dv.setUint32(0, id, true);
    const r = bpf(BPF_BTF_GET_NEXT_ID, attr);
    if (r < 0) throw new BpfVmaError(`BPF_BTF_GET_NEXT_ID: ${errnoText(-r)}`);
    id = dv.getUint32(4, true);
    attr.fill(0);
    dv.setUint32(0, id, true);
    const fd = bpf(BPF_BTF_GET_FD_BY_ID, attr);
    if (fd < 0) continue; // gone meanwhile
    try {
      const infoOf = (data?: Uint8Array) => {
        info.fill(0);
        name.fill(0);
        if (data) {
          iv.setBigUint64(0, BigInt(addr(data)), true);
          iv.setUint32(8, data.length, true);
        }
        iv.setBigUint64(16, BigInt(addr(name)), true);
        iv.setUint32(24, name.length, true);
        attr.fill(0);
        dv.setUint32(0, fd, true);
        dv.setUint32(4, info.length, true);
        dv.setBigUint64(8, BigInt(addr(info)), true);
        const e = bpf(BPF_OBJ_GET_INFO_BY_FD, attr);
        if (e < 0) throw new BpfVmaError(`BPF_OBJ_GET_INFO_BY_FD of BTF ${id}: ${errnoText(-e)}`);
      };
      infoOf();
      const n = name.indexOf(0);
      if (iv.getUint32(28, true) !== 1 || Buffer.from(name.subarray(0, n)).toString("latin1") !== "vmlinux") continue;
      const data = new Uint8Array(iv.getUint32(8, true));
      infoOf(data);
      if (iv.getUint32(8, true) !== data.length) throw new BpfVmaError("the kernel's BTF changed size");
      return data;
    } finally {
      syscall(NR.close, fd);
    }
  }
  throw new BpfVmaError("no vmlinux BTF among the kernel's BTF objects");
}

/** The layout the program needs, from the kernel's BTF (a small parser: header, types, strings). */
function btfLayout(d = vmlinuxBtf()): Layout {
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  if (d.length < 24 || dv.getUint16(0, true) !== 0xeb9f) throw new BpfVmaError("the kernel's BTF: bad magic");
  const hdrLen = dv.getUint32(4, true),
    typeOff = hdrLen + dv.getUint32(8, true),
    typeEnd = typeOff + dv.getUint32(12, true),
    strOff = hdrLen + dv.getUint32(16, true),
    strEnd = strOff + dv.getUint32(20, true);
  if (typeEnd > d.length || strEnd > d.length || typeOff & 3 || (typeEnd - typeOff) & 3)
    throw new BpfVmaError("the kernel's BTF: bad header");
  // (a view where the section is 4-byte aligned in memory, else a copy)
  const u =
    (d.byteOffset + typeOff) % 4 === 0
      ? new Uint32Array(d.buffer, d.byteOffset + typeOff, (typeEnd - typeOff) / 4)
      : new Uint32Array(d.buffer.slice(d.byteOffset + typeOff, d.byteOffset + typeEnd));
  const strs = Buffer.from(d.buffer, d.byteOffset + strOff, strEnd - strOff);
  // the names looked for, as offsets in the string section (-1: absent)
  const nameOff = (s: string) => {
    const at = strs.indexOf(Buffer.from(`\0${s}\0`, "latin1"));
    return at < 0 ? -1 : at + 1;
  };
  const want = {
    func: nameOff("bpf_iter_task_vma"),
    ctx: nameOff("bpf_iter__task_vma"),
    meta: nameOff("bpf_iter_meta"),
    vma: nameOff("vm_area_struct"),
  };
  // every type's start (in u32s; ids from 1), and the ids of the four named ones
  const starts = new Int32Array(u.length / 3 + 2).fill(-1);
  let ids = 1;
  const found = { func: 0, ctx: 0, meta: 0, vma: 0 };
  for (let p = 0; p < u.length; ids++) {
    const name = u[p],
      info = u[p + 1];
    const kind = (info >>> 24) & 0x1f,
      vlen = info & 0xffff;
    starts[ids] = p;
    if (kind === KIND.FUNC && name === want.func && !found.func) found.func = ids;
    else if (kind === KIND.STRUCT) {
      if (name === want.ctx && !found.ctx) found.ctx = ids;
      else if (name === want.meta && !found.meta) found.meta = ids;
      else if (name === want.vma && !found.vma) found.vma = ids;
    }
    p += 3;
    if (kind === 1 || kind === 14 || kind === 17)
      p += 1; // INT, VAR, DECL_TAG
    else if (kind === 3)
      p += 3; // ARRAY
    else if (kind === 4 || kind === 5 || kind === 15 || kind === 19)
      p += 3 * vlen; // STRUCT, UNION, DATASEC, ENUM64
    else if (kind === 6 || kind === 13) p += 2 * vlen; // ENUM, FUNC_PROTO
  }
  for (const [k, id] of Object.entries(found))
    if (!id)
      throw new BpfVmaError(`the kernel's BTF has no ${k === "func" ? "FUNC bpf_iter_task_vma" : `struct ${k}`}`);
  const strAt = (o: number) => strs.toString("latin1", o, strs.indexOf(0, o));
  const kindOf = (id: number) => (id > 0 && id < ids ? (u[starts[id] + 1] >>> 24) & 0x1f : -1);
  /** a type's size in bytes, through typedefs and qualifiers */
  const sizeOf = (id: number): number => {
    for (let i = 0; i < 16; i++) {
      const kind = kindOf(id);
      if (kind === KIND.INT || kind === KIND.STRUCT || kind === KIND.UNION) return u[starts[id] + 2];
      if (kind === KIND.PTR) return 8;
      if (kind !== KIND.TYPEDEF && kind !== KIND.VOLATILE && kind !== KIND.CONST && kind !== KIND.RESTRICT) break;
      id = u[starts[id] + 2];
    }
    return -1;
  };
  /** byte offset of member `member` of struct id (found in anonymous unions/structs too); its size must be 8 */
  const offsetOf = (id: number, member: string, bits = 0): number => {
    const p = starts[id],
      info = u[p + 1];
    const vlen = info & 0xffff,
      kflag = info >>> 31;
    for (let i = 0; i < vlen; i++) {
      const m = p + 3 + 3 * i;
      const mname = u[m],
        mtype = u[m + 1],
        moff = u[m + 2];
      const off = bits + (kflag ? moff & 0xffffff : moff);
      if (mname === 0) {
        const k = kindOf(mtype);
        if (k === KIND.STRUCT || k === KIND.UNION) {
          const r = offsetOf(mtype, member, off);
          if (r >= 0) return r;
        }
        continue;
      }
      if (strAt(mname) !== member) continue;
      if (off % 64 !== 0 || sizeOf(mtype) !== 8) throw new BpfVmaError(`BTF: ${member} is not an aligned 8-byte field`);
      return off / 8;
    }
    return -1;
  };
  const need = (id: number, member: string, what: string) => {
    const o = offsetOf(id, member);
    if (o < 0) throw new BpfVmaError(`BTF: ${what} has no ${member}`);
    return o;
  };
  return {
    funcId: found.func,
    ctxMeta: need(found.ctx, "meta", "struct bpf_iter__task_vma"),
    ctxVma: need(found.ctx, "vma", "struct bpf_iter__task_vma"),
    metaSeq: need(found.meta, "seq", "struct bpf_iter_meta"),
    vmStart: need(found.vma, "vm_start", "struct vm_area_struct"),
    vmEnd: need(found.vma, "vm_end", "struct vm_area_struct"),
    vmFlags: need(found.vma, "vm_flags", "struct vm_area_struct"),
  };
}

/** One BPF instruction: opcode, dst, src, 16-bit offset, 32-bit immediate. */
function insn(code: number, dst: number, src: number, off: number, imm: number): number[] {
  return [
    code,
    dst | (src << 4),
    off & 0xff,
    (off >> 8) & 0xff,
    imm & 0xff,
    (imm >> 8) & 0xff,
    (imm >> 16) & 0xff,
    (imm >>> 24) & 0xff,
  ];
}
const LDX_DW = 0x79, // BPF_LDX | BPF_MEM | BPF_DW
  STX_DW = 0x7b, // BPF_STX | BPF_MEM | BPF_DW
  MOV_X = 0xbf, // BPF_ALU64 | BPF_MOV | BPF_X
  MOV_K = 0xb7, // BPF_ALU64 | BPF_MOV | BPF_K
  ADD_K = 0x07, // BPF_ALU64 | BPF_ADD | BPF_K
  JEQ_K = 0x15, // BPF_JMP | BPF_JEQ | BPF_K
  CALL = 0x85,
  EXIT = 0x95;

/**
 * The program: for each VMA, its vm_start, vm_end and vm_flags written to the iterator's seq_file
 * (bpf_seq_write from the stack); nothing for the final call (vma NULL). r1 = ctx, r10 = frame.
 */
function program(l: Layout): Uint8Array {
  const body = [
    insn(LDX_DW, 2, 1, l.ctxVma, 0), // r2 = ctx->vma
    insn(JEQ_K, 2, 0, 12, 0), // if r2 == 0 goto out (12 instructions on)
    insn(LDX_DW, 3, 2, l.vmStart, 0), // r3 = vma->vm_start
    insn(STX_DW, 10, 3, -24, 0), // fp[-24] = r3
    insn(LDX_DW, 3, 2, l.vmEnd, 0),
    insn(STX_DW, 10, 3, -16, 0),
    insn(LDX_DW, 3, 2, l.vmFlags, 0),
    insn(STX_DW, 10, 3, -8, 0),
    insn(LDX_DW, 1, 1, l.ctxMeta, 0), // r1 = ctx->meta
    insn(LDX_DW, 1, 1, l.metaSeq, 0), // r1 = meta->seq
    insn(MOV_X, 2, 10, 0, 0), // r2 = fp - 24
    insn(ADD_K, 2, 0, 0, -24),
    insn(MOV_K, 3, 0, 0, 24), // r3 = 24
    insn(CALL, 0, 0, 0, BPF_FUNC_seq_write),
    insn(MOV_K, 0, 0, 0, 0), // out: return 0
    insn(EXIT, 0, 0, 0, 0),
  ];
  return new Uint8Array(body.flat());
}

function bpf(cmd: number, attr: Uint8Array): number {
  return syscall(NR.bpf, cmd, addr(attr), ATTR);
}

/** The loaded program (one per run) and its use on one process at a time. */
export class VmaIterator {
  private constructor(
    private readonly progFd: number,
    readonly layout: Layout
  ) {}

  /** Load the program. Throws BpfVmaError with the reason (and the verifier's log where it has one). */
  static load(): VmaIterator {
    const l = btfLayout();
    const code = program(l);
    const license = Buffer.from("Dual MIT/GPL\0", "latin1"); // bpf_seq_write is for GPL-compatible programs
    const log = new Uint8Array(16384);
    const attr = new Uint8Array(ATTR),
      dv = new DataView(attr.buffer);
    const load = (withLog: boolean) => {
      attr.fill(0);
      dv.setUint32(0, BPF_PROG_TYPE_TRACING, true);
      dv.setUint32(4, code.length / 8, true);
      dv.setBigUint64(8, BigInt(addr(code)), true);
      dv.setBigUint64(16, BigInt(addr(license)), true);
      if (withLog) {
        dv.setUint32(24, 1, true); // log_level
        dv.setUint32(28, log.length, true);
        dv.setBigUint64(32, BigInt(addr(log)), true);
      }
      attr.set(Buffer.from("criu_bun_vmas", "latin1"), 48); // prog_name
      dv.setUint32(68, BPF_TRACE_ITER, true); // expected_attach_type
      dv.setUint32(108, l.funcId, true); // attach_btf_id (attach_btf_obj_fd 0: vmlinux)
      return bpf(BPF_PROG_LOAD, attr);
    };
    let fd = load(false);
    if (fd < 0) {
      const first = fd;
      fd = load(true);
      if (fd < 0) {
        const n = log.indexOf(0);
        const text = Buffer.from(log.subarray(0, n < 0 ? log.length : n))
          .toString("latin1")
          .trim()
          .split("\n")
          .slice(-3)
          .join(" | ");
        throw new BpfVmaError(`BPF_PROG_LOAD: ${errnoText(-first)}${text ? ` (verifier: ${text})` : ""}`);
      }
    }
    return new VmaIterator(fd, l);
  }

  /** Unload the program (its fd closed). */
  close() {
    syscall(NR.close, this.progFd);
  }

  /**
   * The VMAs of task tid (its process's, as its leader sees them): [start, end, flags] for each, in
   * address order, 3 entries per VMA. Throws BpfVmaError.
   */
  read(tid: number): BigUint64Array {
    const info = new Uint8Array(16),
      iv = new DataView(info.buffer);
    iv.setUint32(0, tid, true); // bpf_iter_link_info.task.tid
    const attr = new Uint8Array(ATTR),
      dv = new DataView(attr.buffer);
    dv.setUint32(0, this.progFd, true);
    dv.setUint32(8, BPF_TRACE_ITER, true);
    dv.setBigUint64(16, BigInt(addr(info)), true);
    dv.setUint32(24, info.length, true);
    const link = bpf(BPF_LINK_CREATE, attr);
    if (link < 0) throw new BpfVmaError(`BPF_LINK_CREATE for ${tid}: ${errnoText(-link)}`);
    let iter = -1;
    try {
      attr.fill(0);
      dv.setUint32(0, link, true);
      iter = bpf(BPF_ITER_CREATE, attr);
      if (iter < 0) throw new BpfVmaError(`BPF_ITER_CREATE for ${tid}: ${errnoText(-iter)}`);
      let buf = readBuf;
      let n = 0;
      for (;;) {
        if (buf.length - n < 8192) {
          const b = new Uint8Array(buf.length * 2);
          b.set(buf.subarray(0, n));
          buf = readBuf = b;
        }
        const r = syscall(NR.read, iter, addr(buf, n), buf.length - n);
        if (r === -4) continue;
        if (r < 0) throw new BpfVmaError(`read of the VMA iterator of ${tid}: ${errnoText(-r)}`);
        if (r === 0) break;
        n += r;
      }
      if (n % 24) throw new BpfVmaError(`the VMA iterator of ${tid} gave ${n} bytes`);
      return new BigUint64Array(buf.buffer.slice(0, n));
    } finally {
      if (iter >= 0) syscall(NR.close, iter);
      syscall(NR.close, link);
    }
  }
}
let readBuf = new Uint8Array(65536);
