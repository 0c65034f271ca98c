// errno numbers (x86_64 Linux) and names, so errors read like criu's: "(errno 3: ESRCH)".
export const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 3: "ESRCH", 4: "EINTR", 5: "EIO", 6: "ENXIO", 7: "E2BIG", 8: "ENOEXEC",
  9: "EBADF", 10: "ECHILD", 11: "EAGAIN", 12: "ENOMEM", 13: "EACCES", 14: "EFAULT", 16: "EBUSY",
  17: "EEXIST", 18: "EXDEV", 19: "ENODEV", 20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL", 23: "ENFILE",
  24: "EMFILE", 25: "ENOTTY", 26: "ETXTBSY", 27: "EFBIG", 28: "ENOSPC", 29: "ESPIPE", 30: "EROFS",
  32: "EPIPE", 34: "ERANGE", 36: "ENAMETOOLONG", 38: "ENOSYS", 39: "ENOTEMPTY", 40: "ELOOP",
  61: "ENODATA", 75: "EOVERFLOW", 88: "ENOTSOCK", 92: "ENOPROTOOPT", 93: "EPROTONOSUPPORT",
  95: "EOPNOTSUPP", 97: "EAFNOSUPPORT", 98: "EADDRINUSE", 99: "EADDRNOTAVAIL", 104: "ECONNRESET",
  107: "ENOTCONN", 110: "ETIMEDOUT", 111: "ECONNREFUSED", 115: "EINPROGRESS",
  512: "ERESTARTSYS", 513: "ERESTARTNOINTR", 514: "ERESTARTNOHAND", 516: "ERESTART_RESTARTBLOCK",
};
export const E = Object.fromEntries(Object.entries(ERRNO_NAMES).map(([k, v]) => [v, Number(k)])) as Record<string, number>;

export function errnoName(e: number): string {
  return ERRNO_NAMES[e] ?? `E${e}`;
}

/** "errno N: ENAME" for a positive errno (a negative one, as raw syscalls return it, is turned round) */
export function errnoText(e: number | bigint): string {
  const n = Math.abs(Number(e));
  return `errno ${n}: ${errnoName(n)}`;
}

/** A failed system call. `errno` is positive. */
export class SysError extends Error {
  constructor(public call: string, public errno: number, detail?: string) {
    super(`${call}${detail ? ` ${detail}` : ""} failed (${errnoText(errno)})`);
    this.name = "SysError";
  }
}
