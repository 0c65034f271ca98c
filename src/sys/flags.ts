// Process-control constants, named once: prctl(2) options (PR), clone/unshare/setns flags
// (CLONE), madvise(2) advice (MADV). Socket constants are in ./sock, open and fcntl ones in ./mem,
// ptrace and wait ones in ./ptrace, syscall numbers in ./nr.

/** prctl(2) options, and the sub-options of PR_SET_MM, PR_CAP_AMBIENT and PR_TIMER_CREATE_RESTORE_IDS */
export const PR = {
  SET_PDEATHSIG: 1,
  GET_PDEATHSIG: 2,
  GET_DUMPABLE: 3,
  SET_DUMPABLE: 4,
  SET_KEEPCAPS: 8,
  SET_NAME: 15,
  SET_SECCOMP: 22,
  CAPBSET_DROP: 24,
  GET_SECUREBITS: 27,
  GET_TSC: 25,
  GET_TIMERSLACK: 30,
  MCE_KILL_GET: 34,
  GET_MDWE: 66,
  SET_SECUREBITS: 28,
  SET_MM: 35,
  SET_CHILD_SUBREAPER: 36,
  GET_CHILD_SUBREAPER: 37,
  SET_NO_NEW_PRIVS: 38,
  GET_TID_ADDRESS: 40,
  SET_THP_DISABLE: 41,
  GET_THP_DISABLE: 42,
  CAP_AMBIENT: 47,
  TIMER_CREATE_RESTORE_IDS: 77,
  SET_MM_MAP: 14,
  SET_MM_MAP_SIZE: 15,
  CAP_AMBIENT_RAISE: 2,
  TIMER_CREATE_RESTORE_IDS_OFF: 0,
  TIMER_CREATE_RESTORE_IDS_ON: 1,
  TIMER_CREATE_RESTORE_IDS_GET: 2,
} as const;

/** clone(2)/clone3(2) flags; the CLONE_NEW* ones are also unshare(2)'s and setns(2)'s */
export const CLONE = {
  NEWTIME: 0x80,
  VM: 0x100,
  FS: 0x200,
  FILES: 0x400,
  SIGHAND: 0x800,
  VFORK: 0x4000,
  PARENT: 0x8000,
  THREAD: 0x10000,
  NEWNS: 0x20000,
  SYSVSEM: 0x40000,
  NEWUTS: 0x04000000,
  NEWIPC: 0x08000000,
  NEWPID: 0x20000000,
  NEWNET: 0x40000000,
} as const;
/** sizeof(struct clone_args) up to its cgroup field (CLONE_ARGS_SIZE_VER2): the size clone3 is given */
export const CLONE_ARGS_SIZE = 88;

/** madvise(2) advice */
export const MADV = {
  RANDOM: 1,
  SEQUENTIAL: 2,
  DONTNEED: 4,
  DONTFORK: 10,
  MERGEABLE: 12,
  HUGEPAGE: 14,
  NOHUGEPAGE: 15,
  DONTDUMP: 16,
  WIPEONFORK: 18,
  POPULATE_WRITE: 23,
} as const;
/** The madvise advice a VMA keeps in its flags, with the smaps VmFlags mnemonic that shows each
 *  (memory.ts reads it back from VmFlags; vmflags.ts sets each to check its bit table). */
export const MADV_VMFLAGS: readonly (readonly [string, number])[] = [
  ["dc", MADV.DONTFORK],
  ["dd", MADV.DONTDUMP],
  ["mg", MADV.MERGEABLE],
  ["hg", MADV.HUGEPAGE],
  ["nh", MADV.NOHUGEPAGE],
  ["wf", MADV.WIPEONFORK],
  ["sr", MADV.SEQUENTIAL],
  ["rr", MADV.RANDOM],
];
