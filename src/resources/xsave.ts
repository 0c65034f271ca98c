// Mapping between the kernel's xsave buffer (NT_X86_XSTATE, standard format) and CRIU's
// user_x86_fpregs_entry / user_x86_xsave_entry fields. Component offsets come from CPUID leaf 0xD,
// as they differ between CPUs (e.g. AMD has no MPX, so opmask sits at 832 rather than 1088).
import { cpuid } from "../sys/syscall";
import type * as S from "../images/schemas";

/** the user_x86_xsave_entry fields of the components past the legacy area */
type CompField = "ymmhSpace" | "bndregState" | "bndcsrState" | "opmaskReg" | "zmmUpper" | "hi16Zmm" | "pkru";
interface Comp {
  bit: number;
  field: CompField;
  wordBytes: 4 | 8;
}
// component bit -> CRIU field; 2=YMM_Hi128, 3=BNDREGS, 4=BNDCSR, 5=opmask, 6=ZMM_Hi256, 7=Hi16_ZMM, 9=PKRU
const COMPONENTS: Comp[] = [
  { bit: 2, field: "ymmhSpace", wordBytes: 4 },
  { bit: 3, field: "bndregState", wordBytes: 8 },
  { bit: 4, field: "bndcsrState", wordBytes: 8 },
  { bit: 5, field: "opmaskReg", wordBytes: 8 },
  { bit: 6, field: "zmmUpper", wordBytes: 8 },
  { bit: 7, field: "hi16Zmm", wordBytes: 8 },
  { bit: 9, field: "pkru", wordBytes: 4 },
];

let layout: { off: number; size: number }[] | undefined;
function compLayout() {
  if (!layout) {
    layout = [];
    for (let i = 0; i < 10; i++) {
      if (i < 2) {
        layout.push({ off: 0, size: 0 });
        continue;
      }
      const r = cpuid(0xd, i);
      layout.push({ off: r[1], size: r[0] });
    }
  }
  return layout;
}

function words(buf: Uint8Array, off: number, len: number, w: 4 | 8): (number | bigint)[] {
  const dv = new DataView(buf.buffer, buf.byteOffset);
  const out: (number | bigint)[] = [];
  for (let i = 0; i < len; i += w) out.push(w === 4 ? dv.getUint32(off + i, true) : dv.getBigUint64(off + i, true));
  return out;
}
function putWords(buf: Uint8Array, off: number, vals: (number | bigint)[], w: 4 | 8) {
  const dv = new DataView(buf.buffer, buf.byteOffset);
  vals.forEach((v, i) => {
    if (off + (i + 1) * w > buf.length) return;
    if (w === 4) dv.setUint32(off + i * w, Number(v), true);
    else dv.setBigUint64(off + i * w, BigInt(v), true);
  });
}

/** xsave buffer -> init object for user_x86_fpregs_entry (with xsave sub-message). */
export function xsaveToFpregs(x: Uint8Array): Record<string, unknown> {
  const dv = new DataView(x.buffer, x.byteOffset);
  const fp: Record<string, unknown> = {
    cwd: dv.getUint16(0, true),
    swd: dv.getUint16(2, true),
    twd: dv.getUint8(4),
    fop: dv.getUint16(6, true),
    rip: dv.getBigUint64(8, true),
    rdp: dv.getBigUint64(16, true),
    mxcsr: dv.getUint32(24, true),
    mxcsrMask: dv.getUint32(28, true),
    stSpace: words(x, 32, 128, 4),
    xmmSpace: words(x, 160, 256, 4),
    padding: words(x, 416, 96, 4),
  };
  if (x.length > 512) {
    const xstateBv = dv.getBigUint64(512, true);
    const xs: Record<string, unknown> = { xstateBv };
    const L = compLayout();
    for (const c of COMPONENTS) {
      const { off, size } = L[c.bit];
      if (!size || off + size > x.length) continue;
      xs[c.field] = words(x, off, size, c.wordBytes);
    }
    fp.xsave = xs;
  }
  return fp;
}

/** Inverse of xsaveToFpregs, into a buffer of the size the kernel wants. */
export function fpregsToXsave(fp: S.user_x86_fpregs_entry, size: number): Uint8Array {
  const x = new Uint8Array(size);
  const dv = new DataView(x.buffer);
  dv.setUint16(0, fp.cwd, true);
  dv.setUint16(2, fp.swd, true);
  dv.setUint8(4, fp.twd);
  dv.setUint16(6, fp.fop, true);
  dv.setBigUint64(8, BigInt(fp.rip), true);
  dv.setBigUint64(16, BigInt(fp.rdp), true);
  dv.setUint32(24, fp.mxcsr, true);
  dv.setUint32(28, fp.mxcsrMask, true);
  putWords(x, 32, fp.stSpace ?? [], 4);
  putWords(x, 160, fp.xmmSpace ?? [], 4);
  putWords(x, 416, fp.padding ?? [], 4);
  if (fp.xsave && size > 512) {
    dv.setBigUint64(512, BigInt(fp.xsave.xstateBv), true);
    const L = compLayout();
    for (const c of COMPONENTS) {
      const { off, size: sz } = L[c.bit];
      const vals = fp.xsave[c.field];
      if (!sz || !vals?.length) continue;
      putWords(x, off, vals, c.wordBytes);
    }
  }
  return x;
}
