// Network namespaces made by a test (ip netns, nsenter), shared by the tests that move TCP
// connections between them (tcp.test.ts, migrate.test.ts): each test file names its own with a
// prefix and removes what is left in its afterAll (Netns.cleanup).
import { REPO_ROOT } from "./harness";
export { waitFor } from "./harness";

/** Run a command that must succeed; its stdout. */
export function runOk(cmd: string[], what = cmd.join(" ")): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", cwd: REPO_ROOT });
  if (r.exitCode !== 0) throw new Error(`${what} failed (${r.exitCode}): ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

/** CMD run inside the network namespace NS */
export const inNs = (ns: string, cmd: string[]) => ["nsenter", `--net=/run/netns/${ns}`, ...cmd];

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
  del(ns: string) { runOk(["ip", "netns", "del", ns]); this.live.delete(ns); }
  cleanup() {
    for (const ns of this.live) Bun.spawnSync(["ip", "netns", "del", ns], { stderr: "ignore" });
    this.live.clear();
  }
}

/** A counter of the namespace's TCP MIB (/proc/net/snmp), e.g. OutRsts. */
export function tcpCounter(ns: string, name: string): number {
  const lines = runOk(inNs(ns, ["cat", "/proc/net/snmp"])).split("\n").filter((l) => l.startsWith("Tcp:"));
  const keys = lines[0].split(/\s+/), vals = lines[1].split(/\s+/);
  return Number(vals[keys.indexOf(name)]);
}

/**
 * RTO backoffs of the clients' connections to PORT in NS (ss -ti "backoff:N"): a client sending into
 * the network lock times out again and again (a packet the lock drops is not counted as
 * retransmitted by the kernel's counters, but the timeouts are)
 */
export function clientBackoffs(ns: string, port: number): number[] {
  const out = runOk(inNs(ns, ["ss", "-Htin", "state", "established", `( dport = :${port} )`]));
  const socks = out.split("\n").filter((l) => l.trim()).reduce<string[]>((acc, l) => {
    if (/^\s/.test(l) && acc.length) acc[acc.length - 1] += ` ${l}`; else acc.push(l);
    return acc;
  }, []);
  return socks.map((l) => Number(/\bbackoff:(\d+)/.exec(l)?.[1] ?? 0));
}
