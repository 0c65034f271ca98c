// The address of a typed array's bytes, for the kernel (syscall arguments, iovecs). A module of
// its own so that code outside src/sys (the page codecs, also loaded by the page Workers) gets
// an address without bun:ffi and without loading the syscall stub.
import { ptr } from "bun:ffi";

/**
 * The last small buffers whose address was taken, held. A call given buffers by address only, such
 * as `syscall(NR.rename, addr(cstr(from)), addr(cstr(to)))`, keeps nothing of the first: making
 * the second may collect it and reuse its bytes, and the kernel reads another path (renames of a
 * dump's images failed with ENOENT and EXDEV now and then). A buffer stays reachable here until
 * RECENT more addresses were taken, far more than one call's arguments; large buffers are always
 * held by their owners and are left out, so that none is kept alive longer.
 */
const RECENT = 64;
const recent: unknown[] = new Array(RECENT).fill(undefined);
let next = 0;

/** Address of a typed array's bytes, for passing to the kernel. */
export function addr(buf: ArrayBufferView | ArrayBuffer, offset = 0): number {
  if (buf.byteLength <= 4096) {
    recent[next] = buf;
    next = (next + 1) % RECENT;
  }
  return (ptr(buf as NodeJS.TypedArray | ArrayBufferLike | DataView) as unknown as number) + offset;
}

const held: unknown[] = [];
/** Call after a syscall that was given buffers by address only (argv strings, a clone stack): a
 *  use the compiler cannot drop, so they stay reachable until the call has returned. They are held
 *  until the next keepAlive. */
export function keepAlive(...bufs: unknown[]) {
  held.splice(0, held.length, ...bufs);
}
