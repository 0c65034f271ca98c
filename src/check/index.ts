// Every probe, in the order `check --all` lists them, and running them.
import { log } from "../log";
import { Missing, errText, type Probe } from "./probe";
import { TRACEE_PROBES } from "./ptrace";
import { MEMORY_PROBES } from "./memory";
import { FILE_PROBES } from "./files";
import { NET_PROBES } from "./net";
import { NS_PROBES } from "./ns";
import { CRIU_EXTRA_PROBES, CRIU_FEATURE_NAMES, UNSUPPORTED_FEATURES } from "./criu-features";

export { CRIU_FEATURE_NAMES, UNSUPPORTED_FEATURES };

const nft = NET_PROBES.find((p) => p.name === "nftables")!;
/** criu's network_lock_nftables: the lock criu-bun takes is the nf_tables one */
const NETWORK_LOCK_NFTABLES: Probe = { ...nft, name: "network_lock_nftables", desc: "network locking with nf_tables" };

export const PROBES: Probe[] = [
  ...TRACEE_PROBES,
  ...MEMORY_PROBES,
  ...FILE_PROBES,
  ...NET_PROBES,
  NETWORK_LOCK_NFTABLES,
  ...NS_PROBES,
  ...CRIU_EXTRA_PROBES,
]
  // basic ones first, each group in its own order
  .sort((a, b) => Number(b.basic) - Number(a.basic));

export function findProbe(name: string): Probe | undefined {
  return PROBES.find((p) => p.name === name);
}

/** Every name `check --feature` answers: CRIU 4.2's in criu's order, then criu-bun's own. */
export function featureNames(): string[] {
  const criu = new Set<string>(CRIU_FEATURE_NAMES);
  return [...CRIU_FEATURE_NAMES, ...PROBES.map((p) => p.name).filter((n) => !criu.has(n))];
}

export interface ProbeResult {
  name: string;
  basic: boolean;
  ok: boolean;
  /** detail when ok, the reason when not */
  text: string;
  /** true when the probe itself broke rather than finding the feature missing */
  broken?: boolean;
  ms: number;
}

export function runProbe(p: Probe): ProbeResult {
  const t0 = performance.now();
  let r: ProbeResult;
  try {
    const detail = p.run();
    r = { name: p.name, basic: p.basic, ok: true, text: detail ?? "", ms: 0 };
  } catch (e) {
    r = { name: p.name, basic: p.basic, ok: false, text: errText(e), broken: !(e instanceof Missing), ms: 0 };
  }
  r.ms = performance.now() - t0;
  log.debug(`check: ${p.name}: ${r.ok ? "yes" : "no"}${r.text ? ` (${r.text})` : ""} in ${r.ms.toFixed(1)} ms`);
  return r;
}
