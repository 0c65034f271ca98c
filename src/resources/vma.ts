// VMA classification shared by the memory dump and restore.
import { MADV_VMFLAGS } from "../sys/flags";
export const VMA = {
  REGULAR: 1 << 0,
  STACK: 1 << 1,
  VSYSCALL: 1 << 2,
  VDSO: 1 << 3,
  HEAP: 1 << 5,
  FILE_PRIVATE: 1 << 6,
  FILE_SHARED: 1 << 7,
  ANON_SHARED: 1 << 8,
  ANON_PRIVATE: 1 << 9,
  SYSVIPC: 1 << 10,
  SOCKET: 1 << 11,
  VVAR: 1 << 12,
  AIORING: 1 << 13,
  MEMFD: 1 << 14,
  UNSUPP: 1 << 31,
} as const;
export const MAP = {
  SHARED: 1,
  PRIVATE: 2,
  FIXED: 0x10,
  ANONYMOUS: 0x20,
  GROWSDOWN: 0x100,
  NORESERVE: 0x4000,
  LOCKED: 0x2000,
  FIXED_NOREPLACE: 0x100000,
} as const;
export const PE = { PARENT: 1, LAZY: 2, PRESENT: 4 } as const;
export const PAGE = 4096;

export function madvFromVmFlags(vmflags: string[]): bigint {
  let m = 0n;
  for (const [flag, adv] of MADV_VMFLAGS) if (vmflags.includes(flag)) m |= 1n << BigInt(adv);
  return m;
}

/** The first index of sorted disjoint address ranges ([start, end, ...]) whose end is past a (binary search). */
export function firstEndAfter(ranges: readonly (readonly [bigint, bigint, ...unknown[]])[], a: bigint): number {
  let lo = 0,
    hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid][1] <= a) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
