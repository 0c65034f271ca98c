// What the kernel does to the registers of a thread stopped inside a syscall when it resumes
// without a signal handler to run: the interrupted call is re-issued, or fails with EINTR where
// the kernel's restart_block cannot be carried over (a restored thread, a sigreturn).
import { R, type Regs } from "../sys/ptrace";

const ERESTARTSYS = -512n,
  ERESTARTNOINTR = -513n,
  ERESTARTNOHAND = -514n,
  ERESTART_RESTARTBLOCK = -516n;
const EINTR = -4n;

/** Fix registers of a thread stopped inside a syscall so that it re-issues or fails it cleanly. */
export function fixupRestart(regs: Regs) {
  const orig = BigInt.asIntN(64, regs[R.orig_rax]);
  if (orig < 0n) return;
  const rax = BigInt.asIntN(64, regs[R.rax]);
  if (rax === ERESTARTSYS || rax === ERESTARTNOINTR || rax === ERESTARTNOHAND) {
    regs[R.rax] = regs[R.orig_rax];
    regs[R.rip] -= 2n;
  } else if (rax === ERESTART_RESTARTBLOCK) {
    // The kernel's restart_block cannot be carried over. poll() without a timeout loses nothing
    // by being re-issued; anything else (nanosleep, timed waits) sees EINTR, as with criu.
    // Sleeps are re-issued for what is left: the kernel already stored the remaining time in
    // *rem, so that becomes the new request; absolute sleeps are re-issued as they are.
    const reissue = () => {
      regs[R.rax] = regs[R.orig_rax];
      regs[R.rip] -= 2n;
    };
    if (orig === 7n && BigInt.asIntN(32, regs[R.rdx] & 0xffffffffn) < 0n) reissue();
    else if (orig === 35n && regs[R.rsi] !== 0n) {
      regs[R.rdi] = regs[R.rsi];
      reissue();
    } else if (orig === 230n && regs[R.rsi] & 1n /* TIMER_ABSTIME */) reissue();
    else if (orig === 230n && regs[R.r10] !== 0n) {
      regs[R.rdx] = regs[R.r10];
      reissue();
    } else regs[R.rax] = BigInt.asUintN(64, EINTR);
  }
  // orig_ax stays the syscall number, as CRIU writes it; restore resumes with -1 (CRIU's sigreturn
  // does the same), so nothing is restarted twice
}
