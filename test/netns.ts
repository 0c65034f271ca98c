// Network namespaces made by a test (ip netns, nsenter), shared by the tests that move TCP
// connections between them (tcp.test.ts, migrate.test.ts): each test file names its own with a
// prefix and removes what is left in its afterAll (Netns.cleanup).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { criuBunCommand, REPO_ROOT, waitFor } from "./harness";
export { waitFor };

/** Run a command that must succeed; its stdout. */
export function runOk(cmd: string[], what = cmd.join(" ")): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", cwd: REPO_ROOT });
  if (r.exitCode !== 0) throw new Error(`${what} failed (${r.exitCode}): ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

/** CMD run inside the network namespace NS */
export const inNs = (ns: string, cmd: string[]) => ["nsenter", `--net=/run/netns/${ns}`, ...cmd];

/** criu-bun run inside the network namespace NS (60 s deadline): its exit status and stderr */
export function criuIn(ns: string, args: string[]) {
  const r = Bun.spawnSync(inNs(ns, [...criuBunCommand(), ...args]), {
    stdout: "pipe",
    stderr: "pipe",
    cwd: REPO_ROOT,
    timeout: 60_000,
  });
  return { code: r.exitCode, stderr: r.stderr.toString() };
}
const logOf = (dir: string, f: string) => {
  try {
    return readFileSync(join(dir, f), "utf8");
  } catch {
    return "";
  }
};
/** `dump -v4 -o dump.log` of PID inside NS; a failure throws with criu-bun's stderr and log */
export function dumpIn(ns: string, pid: number, dir: string, extra: string[] = []) {
  const r = criuIn(ns, ["dump", "-t", String(pid), "-D", dir, "-o", "dump.log", "-v4", ...extra]);
  if (r.code !== 0) throw new Error(`dump failed (${r.code}): ${r.stderr}\n${logOf(dir, "dump.log")}`);
}
/** `restore -d -v4 -o restore.log` inside NS once the dumped PID is gone and reaped (its PID free) */
export async function restoreIn(ns: string, dir: string, pid: number, extra: string[] = []) {
  await waitFor(() => !existsSync(`/proc/${pid}`), `dumped process ${pid} gone`);
  const r = criuIn(ns, ["restore", "-D", dir, "-o", "restore.log", "-v4", "-d", ...extra]);
  if (r.code !== 0) throw new Error(`restore failed (${r.code}): ${r.stderr}\n${logOf(dir, "restore.log")}`);
}

/**
 * The namespaces of one test file: `PREFIX-name-<pid><random>`, loopback up. The random part: test
 * runs in fresh PID namespaces (CI's, `unshare --pid`) get the same small PIDs, and two such runs
 * at once on one machine must not take (and delete) each other's namespaces.
 */
export class Netns {
  private live = new Set<string>();
  private tag = `${process.pid % 10000}${Math.random().toString(36).slice(2, 6)}`;
  constructor(private prefix: string) {}
  make(name: string): string {
    const ns = `${this.prefix}-${name}-${this.tag}`;
    Bun.spawnSync(["ip", "netns", "del", ns], { stderr: "ignore" });
    runOk(["ip", "netns", "add", ns]);
    this.live.add(ns);
    runOk(["ip", "-n", ns, "link", "set", "lo", "up"]);
    return ns;
  }
  del(ns: string) {
    runOk(["ip", "netns", "del", ns]);
    this.live.delete(ns);
  }
  cleanup() {
    for (const ns of this.live) Bun.spawnSync(["ip", "netns", "del", ns], { stderr: "ignore" });
    this.live.clear();
  }
}

/** A counter of the namespace's TCP MIB (/proc/net/snmp), e.g. OutRsts. */
export function tcpCounter(ns: string, name: string): number {
  const lines = runOk(inNs(ns, ["cat", "/proc/net/snmp"]))
    .split("\n")
    .filter((l) => l.startsWith("Tcp:"));
  const keys = lines[0].split(/\s+/),
    vals = lines[1].split(/\s+/);
  return Number(vals[keys.indexOf(name)]);
}

/**
 * RTO backoffs of the clients' connections to PORT in NS (ss -ti "backoff:N"): a client sending into
 * the network lock times out again and again (a packet the lock drops is not counted as
 * retransmitted by the kernel's counters, but the timeouts are)
 */
export function clientBackoffs(ns: string, port: number): number[] {
  const out = runOk(inNs(ns, ["ss", "-Htin", "state", "established", `( dport = :${port} )`]));
  const socks = out
    .split("\n")
    .filter((l) => l.trim())
    .reduce<string[]>((acc, l) => {
      if (/^\s/.test(l) && acc.length) acc[acc.length - 1] += ` ${l}`;
      else acc.push(l);
      return acc;
    }, []);
  return socks.map((l) => Number(/\bbackoff:(\d+)/.exec(l)?.[1] ?? 0));
}
