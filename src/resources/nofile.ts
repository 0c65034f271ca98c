// RLIMIT_NOFILE for criu-bun itself and for a process under restore: raised (soft to the hard
// limit, the hard limit itself up to fs.nr_open when criu-bun may: CAP_SYS_RESOURCE) so that a
// process with many fds can be dumped and restored; a restored process gets its own limits back
// afterwards (rlimit-*.img, restoreTaskState).
import { readFileSync } from "../sys/fs";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { CriuError, log } from "../log";
import { errnoText } from "../sys/errno";

const RLIMIT_NOFILE = 7;

function nrOpen(): bigint {
  try {
    return BigInt(readFileSync("/proc/sys/fs/nr_open", "latin1").trim());
  } catch {
    return 1048576n;
  }
}

function get(pid: number): [bigint, bigint] | undefined {
  const v = new BigUint64Array(2);
  return syscall(NR.prlimit64, pid, RLIMIT_NOFILE, 0, addr(v)) < 0 ? undefined : [v[0], v[1]];
}

/** Raise pid's (0: criu-bun's) soft RLIMIT_NOFILE towards want (default need): to the hard
 *  limit, and the hard limit itself up to want when criu-bun may (CAP_SYS_RESOURCE). Returns the
 *  soft limit now in force; throws, naming why, when it stays below need. */
export function raiseNofile(need: number, why: string, pid = 0, want = need): number {
  const who = pid ? `process ${pid}` : "criu-bun";
  const cur = get(pid);
  if (!cur) throw new CriuError("limits", `${why}: cannot read RLIMIT_NOFILE of ${who}`);
  const [soft, hard] = cur;
  const goal = BigInt(Math.max(need, want));
  if (soft >= goal) return Number(soft);
  const set = (s: bigint, h: bigint) => syscall(NR.prlimit64, pid, RLIMIT_NOFILE, addr(new BigUint64Array([s, h])), 0);
  const max = nrOpen();
  let now = soft,
    err = 0;
  if (goal > hard) {
    const h = goal <= max ? goal : max;
    const r = set(h, h);
    if (r === 0) now = h;
    else err = -r;
  }
  if (now < goal && hard > now && set(hard, hard) === 0) now = hard;
  if (now < BigInt(need)) {
    throw new CriuError(
      "limits",
      `${why}: ${who} needs ${need} open files, RLIMIT_NOFILE allows ${hard}` +
        (err ? ` and cannot be raised: ${errnoText(err)}; needs CAP_SYS_RESOURCE` : ` (fs.nr_open ${max})`)
    );
  }
  if (now !== soft) log.debug(`${who}: RLIMIT_NOFILE raised from ${soft}/${hard} to ${now} (${why})`);
  return Number(now);
}
