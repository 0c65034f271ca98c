// errno names, numbers and texts (Linux, x86_64), and the one shape every failure line of
// criu-bun takes when a system call failed:
//
//   <who>: <what> failed: <ENAME> (errno <N>: <text>)
//
// e.g. "process 4242 fd 5: memfd_create('buf') failed: EMFILE (errno 24: Too many open files)".
// <who> names the process (or thread) first, then the resource where there is one: "process P
// fd N", "process P VMA 0x7f..-0x7f..", "thread T", an image file, a socket or address. Build a
// line with sysFailed(); where the phrasing is not "<what> failed" (e.g. "cannot open 'x'"), put
// errnoText() after ": ". An error from node:fs (e.code "ENOENT") goes through errnoText(e) too.
// No message prints a bare number or a bare name: test/error-lines.test.ts holds src/ to that.

/** number -> [name, text] (the kernel's names; the texts are glibc's strerror) */
const ERRNOS: Record<number, [string, string]> = {
  1: ["EPERM", "Operation not permitted"],
  2: ["ENOENT", "No such file or directory"],
  3: ["ESRCH", "No such process"],
  4: ["EINTR", "Interrupted system call"],
  5: ["EIO", "Input/output error"],
  6: ["ENXIO", "No such device or address"],
  7: ["E2BIG", "Argument list too long"],
  8: ["ENOEXEC", "Exec format error"],
  9: ["EBADF", "Bad file descriptor"],
  10: ["ECHILD", "No child processes"],
  11: ["EAGAIN", "Resource temporarily unavailable"],
  12: ["ENOMEM", "Cannot allocate memory"],
  13: ["EACCES", "Permission denied"],
  14: ["EFAULT", "Bad address"],
  15: ["ENOTBLK", "Block device required"],
  16: ["EBUSY", "Device or resource busy"],
  17: ["EEXIST", "File exists"],
  18: ["EXDEV", "Invalid cross-device link"],
  19: ["ENODEV", "No such device"],
  20: ["ENOTDIR", "Not a directory"],
  21: ["EISDIR", "Is a directory"],
  22: ["EINVAL", "Invalid argument"],
  23: ["ENFILE", "Too many open files in system"],
  24: ["EMFILE", "Too many open files"],
  25: ["ENOTTY", "Inappropriate ioctl for device"],
  26: ["ETXTBSY", "Text file busy"],
  27: ["EFBIG", "File too large"],
  28: ["ENOSPC", "No space left on device"],
  29: ["ESPIPE", "Illegal seek"],
  30: ["EROFS", "Read-only file system"],
  31: ["EMLINK", "Too many links"],
  32: ["EPIPE", "Broken pipe"],
  33: ["EDOM", "Numerical argument out of domain"],
  34: ["ERANGE", "Numerical result out of range"],
  35: ["EDEADLK", "Resource deadlock avoided"],
  36: ["ENAMETOOLONG", "File name too long"],
  37: ["ENOLCK", "No locks available"],
  38: ["ENOSYS", "Function not implemented"],
  39: ["ENOTEMPTY", "Directory not empty"],
  40: ["ELOOP", "Too many levels of symbolic links"],
  42: ["ENOMSG", "No message of desired type"],
  43: ["EIDRM", "Identifier removed"],
  44: ["ECHRNG", "Channel number out of range"],
  45: ["EL2NSYNC", "Level 2 not synchronized"],
  46: ["EL3HLT", "Level 3 halted"],
  47: ["EL3RST", "Level 3 reset"],
  48: ["ELNRNG", "Link number out of range"],
  49: ["EUNATCH", "Protocol driver not attached"],
  50: ["ENOCSI", "No CSI structure available"],
  51: ["EL2HLT", "Level 2 halted"],
  52: ["EBADE", "Invalid exchange"],
  53: ["EBADR", "Invalid request descriptor"],
  54: ["EXFULL", "Exchange full"],
  55: ["ENOANO", "No anode"],
  56: ["EBADRQC", "Invalid request code"],
  57: ["EBADSLT", "Invalid slot"],
  59: ["EBFONT", "Bad font file format"],
  60: ["ENOSTR", "Device not a stream"],
  61: ["ENODATA", "No data available"],
  62: ["ETIME", "Timer expired"],
  63: ["ENOSR", "Out of streams resources"],
  64: ["ENONET", "Machine is not on the network"],
  65: ["ENOPKG", "Package not installed"],
  66: ["EREMOTE", "Object is remote"],
  67: ["ENOLINK", "Link has been severed"],
  68: ["EADV", "Advertise error"],
  69: ["ESRMNT", "Srmount error"],
  70: ["ECOMM", "Communication error on send"],
  71: ["EPROTO", "Protocol error"],
  72: ["EMULTIHOP", "Multihop attempted"],
  73: ["EDOTDOT", "RFS specific error"],
  74: ["EBADMSG", "Bad message"],
  75: ["EOVERFLOW", "Value too large for defined data type"],
  76: ["ENOTUNIQ", "Name not unique on network"],
  77: ["EBADFD", "File descriptor in bad state"],
  78: ["EREMCHG", "Remote address changed"],
  79: ["ELIBACC", "Can not access a needed shared library"],
  80: ["ELIBBAD", "Accessing a corrupted shared library"],
  81: ["ELIBSCN", ".lib section in a.out corrupted"],
  82: ["ELIBMAX", "Attempting to link in too many shared libraries"],
  83: ["ELIBEXEC", "Cannot exec a shared library directly"],
  84: ["EILSEQ", "Invalid or incomplete multibyte or wide character"],
  85: ["ERESTART", "Interrupted system call should be restarted"],
  86: ["ESTRPIPE", "Streams pipe error"],
  87: ["EUSERS", "Too many users"],
  88: ["ENOTSOCK", "Socket operation on non-socket"],
  89: ["EDESTADDRREQ", "Destination address required"],
  90: ["EMSGSIZE", "Message too long"],
  91: ["EPROTOTYPE", "Protocol wrong type for socket"],
  92: ["ENOPROTOOPT", "Protocol not available"],
  93: ["EPROTONOSUPPORT", "Protocol not supported"],
  94: ["ESOCKTNOSUPPORT", "Socket type not supported"],
  95: ["EOPNOTSUPP", "Operation not supported"],
  96: ["EPFNOSUPPORT", "Protocol family not supported"],
  97: ["EAFNOSUPPORT", "Address family not supported by protocol"],
  98: ["EADDRINUSE", "Address already in use"],
  99: ["EADDRNOTAVAIL", "Cannot assign requested address"],
  100: ["ENETDOWN", "Network is down"],
  101: ["ENETUNREACH", "Network is unreachable"],
  102: ["ENETRESET", "Network dropped connection on reset"],
  103: ["ECONNABORTED", "Software caused connection abort"],
  104: ["ECONNRESET", "Connection reset by peer"],
  105: ["ENOBUFS", "No buffer space available"],
  106: ["EISCONN", "Transport endpoint is already connected"],
  107: ["ENOTCONN", "Transport endpoint is not connected"],
  108: ["ESHUTDOWN", "Cannot send after transport endpoint shutdown"],
  109: ["ETOOMANYREFS", "Too many references: cannot splice"],
  110: ["ETIMEDOUT", "Connection timed out"],
  111: ["ECONNREFUSED", "Connection refused"],
  112: ["EHOSTDOWN", "Host is down"],
  113: ["EHOSTUNREACH", "No route to host"],
  114: ["EALREADY", "Operation already in progress"],
  115: ["EINPROGRESS", "Operation now in progress"],
  116: ["ESTALE", "Stale file handle"],
  117: ["EUCLEAN", "Structure needs cleaning"],
  118: ["ENOTNAM", "Not a XENIX named type file"],
  119: ["ENAVAIL", "No XENIX semaphores available"],
  120: ["EISNAM", "Is a named type file"],
  121: ["EREMOTEIO", "Remote I/O error"],
  122: ["EDQUOT", "Disk quota exceeded"],
  123: ["ENOMEDIUM", "No medium found"],
  124: ["EMEDIUMTYPE", "Wrong medium type"],
  125: ["ECANCELED", "Operation canceled"],
  126: ["ENOKEY", "Required key not available"],
  127: ["EKEYEXPIRED", "Key has expired"],
  128: ["EKEYREVOKED", "Key has been revoked"],
  129: ["EKEYREJECTED", "Key was rejected by service"],
  130: ["EOWNERDEAD", "Owner died"],
  131: ["ENOTRECOVERABLE", "State not recoverable"],
  132: ["ERFKILL", "Operation not possible due to RF-kill"],
  133: ["EHWPOISON", "Memory page has hardware error"],

  // kernel-internal values a tracee's interrupted syscall can show in its registers
  512: ["ERESTARTSYS", "Interrupted system call, to be restarted"],
  513: ["ERESTARTNOINTR", "Interrupted system call, to be restarted"],
  514: ["ERESTARTNOHAND", "Interrupted system call, to be restarted if no handler"],
  515: ["ENOIOCTLCMD", "No ioctl command"],
  516: ["ERESTART_RESTARTBLOCK", "Interrupted system call, to be restarted by restart_syscall"],
  524: ["ENOTSUPP", "Operation is not supported"],
};
/** name -> number: E.ENOENT === 2. The same names and numbers as ERRNOS, written out: built from
 *  ERRNOS at import (Object.fromEntries over its entries) it cost ~0.2 ms of every command's start
 *  in the interpreter, a literal ~0.02 ms (test/error-lines.test.ts holds the two equal). */
export const E: Record<string, number> = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  EIDRM: 43,
  ECHRNG: 44,
  EL2NSYNC: 45,
  EL3HLT: 46,
  EL3RST: 47,
  ELNRNG: 48,
  EUNATCH: 49,
  ENOCSI: 50,
  EL2HLT: 51,
  EBADE: 52,
  EBADR: 53,
  EXFULL: 54,
  ENOANO: 55,
  EBADRQC: 56,
  EBADSLT: 57,
  EBFONT: 59,
  ENOSTR: 60,
  ENODATA: 61,
  ETIME: 62,
  ENOSR: 63,
  ENONET: 64,
  ENOPKG: 65,
  EREMOTE: 66,
  ENOLINK: 67,
  EADV: 68,
  ESRMNT: 69,
  ECOMM: 70,
  EPROTO: 71,
  EMULTIHOP: 72,
  EDOTDOT: 73,
  EBADMSG: 74,
  EOVERFLOW: 75,
  ENOTUNIQ: 76,
  EBADFD: 77,
  EREMCHG: 78,
  ELIBACC: 79,
  ELIBBAD: 80,
  ELIBSCN: 81,
  ELIBMAX: 82,
  ELIBEXEC: 83,
  EILSEQ: 84,
  ERESTART: 85,
  ESTRPIPE: 86,
  EUSERS: 87,
  ENOTSOCK: 88,
  EDESTADDRREQ: 89,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  ESOCKTNOSUPPORT: 94,
  EOPNOTSUPP: 95,
  EPFNOSUPPORT: 96,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ENETRESET: 102,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ESHUTDOWN: 108,
  ETOOMANYREFS: 109,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
  EALREADY: 114,
  EINPROGRESS: 115,
  ESTALE: 116,
  EUCLEAN: 117,
  ENOTNAM: 118,
  ENAVAIL: 119,
  EISNAM: 120,
  EREMOTEIO: 121,
  EDQUOT: 122,
  ENOMEDIUM: 123,
  EMEDIUMTYPE: 124,
  ECANCELED: 125,
  ENOKEY: 126,
  EKEYEXPIRED: 127,
  EKEYREVOKED: 128,
  EKEYREJECTED: 129,
  EOWNERDEAD: 130,
  ENOTRECOVERABLE: 131,
  ERFKILL: 132,
  EHWPOISON: 133,
  ERESTARTSYS: 512,
  ERESTARTNOINTR: 513,
  ERESTARTNOHAND: 514,
  ENOIOCTLCMD: 515,
  ERESTART_RESTARTBLOCK: 516,
  ENOTSUPP: 524,
};

/** "ENOENT" for 2 (a negative value, as raw syscalls return it, is turned round) */
export function errnoName(e: number | bigint): string {
  const n = Math.abs(Number(e));
  return ERRNOS[n]?.[0] ?? `E${n}`;
}

/**
 * The errno part of a failure line: "ENOENT (errno 2: No such file or directory)". Takes a
 * positive or negative errno, or an error thrown by node:fs / a SysError (whose errno it finds);
 * an error without one gives its message's first line.
 */
export function errnoText(e: number | bigint | unknown): string {
  const n = typeof e === "number" || typeof e === "bigint" ? Math.abs(Number(e)) : errnoOf(e);
  if (n === undefined) return String((e as { message?: unknown })?.message ?? e).split("\n")[0];
  const known = ERRNOS[n];
  return known ? `${known[0]} (errno ${n}: ${known[1]})` : `E${n} (errno ${n})`;
}

/** The code of a node:fs / node:net error ("ENOENT"), or undefined. */
export function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/** The positive errno an error carries (SysError, node:fs's code/errno), or undefined. */
export function errnoOf(e: unknown): number | undefined {
  const x = e as { errno?: unknown; code?: unknown } | undefined;
  if (typeof x?.errno === "number" && x.errno !== 0) return Math.abs(x.errno);
  if (typeof x?.code === "string" && E[x.code] !== undefined) return E[x.code];
  return undefined;
}

/**
 * One failure line: "<who>: <what> failed: ENAME (errno N: text)[; hint]". who names the process
 * and the resource ("process 42 fd 3"); errno as for errnoText.
 */
export function sysFailed(who: string, what: string, errno: number | bigint | unknown, hint?: string): string {
  return `${who ? `${who}: ` : ""}${what} failed: ${errnoText(errno)}${hint ? `; ${hint}` : ""}`;
}

/** A failed system call. `errno` is positive. */
export class SysError extends Error {
  constructor(
    public call: string,
    public errno: number,
    detail?: string
  ) {
    super(sysFailed("", `${call}${detail ? ` ${detail}` : ""}`, errno));
    this.name = "SysError";
  }
}
