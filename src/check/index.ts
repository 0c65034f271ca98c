// Every probe, in the order `check --all` lists them, and running them.
import { log } from "../log";
import { Missing, errText, type Probe } from "./probe";
import { TRACEE_PROBES } from "./ptrace";
import { MEMORY_PROBES } from "./memory";
import { FILE_PROBES } from "./files";
import { NET_PROBES } from "./net";
import { NS_PROBES } from "./ns";

export type { Probe } from "./probe";

export const PROBES: Probe[] = [...TRACEE_PROBES, ...MEMORY_PROBES, ...FILE_PROBES, ...NET_PROBES, ...NS_PROBES]
  // basic ones first, each group in its own order
  .sort((a, b) => Number(b.basic) - Number(a.basic));

export function findProbe(name: string): Probe | undefined {
  return PROBES.find((p) => p.name === name);
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
