// The address of a typed array's bytes, for the kernel (syscall arguments, iovecs). A module of
// its own so that code outside src/sys (the page codecs, also loaded by the page Workers) gets
// an address without bun:ffi and without loading the syscall stub.
import { ptr } from "bun:ffi";

/** Address of a typed array's bytes, for passing to the kernel. */
export function addr(buf: ArrayBufferView | ArrayBuffer, offset = 0): number {
  return (ptr(buf as NodeJS.TypedArray | ArrayBufferLike | DataView) as unknown as number) + offset;
}

const held: unknown[] = [];
/** Call after a syscall that was given buffers by address only (argv strings, a clone stack): a
 *  use the compiler cannot drop, so they stay reachable until the call has returned. They are held
 *  until the next keepAlive. */
export function keepAlive(...bufs: unknown[]) {
  held.splice(0, held.length, ...bufs);
}
