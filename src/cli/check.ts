// criu-bun check: probe the kernel features criu-bun relies on (criu's `check` semantics).
//   check                 run the basic probes; "Looks good." and exit 0, else the failures and 1
//   check --all           run every probe, one line each: "NAME ... yes" / "NAME ... no (reason)"
//   check --feature NAME  exit 0 if NAME works, 1 if not; --feature list prints the names
import { CriuError, log } from "../log";
import { PROBES, findProbe, runProbe, type ProbeResult } from "../check/index";
import type { Opts } from "./options";

function out(line: string) {
  process.stdout.write(line + "\n");
}

function line(r: ProbeResult): string {
  return `${r.name} ... ${r.ok ? "yes" : `no (${r.text})`}`;
}

export async function run(opts: Opts, args: string[]): Promise<number> {
  if (args.length) throw new CriuError("check", `unexpected argument '${args[0]}'`);
  if (opts.feature !== undefined) {
    const names = (Array.isArray(opts.feature) ? opts.feature : [opts.feature]).map(String);
    if (names.includes("list")) {
      for (const p of PROBES) out(p.name);
      return 0;
    }
    const probes = names.map((n) => {
      const p = findProbe(n);
      if (!p) throw new CriuError("check", `unknown feature ${n} (see --feature list)`);
      return p;
    });
    let code = 0;
    for (const p of probes) {
      const r = runProbe(p);
      if (r.ok) out(`${p.name} is supported`);
      else { log.error("check", `${p.name} is not supported: ${r.text}`); code = 1; }
    }
    return code;
  }
  const results = (opts.all ? PROBES : PROBES.filter((p) => p.basic)).map(runProbe);
  if (opts.all) for (const r of results) out(line(r));
  const failed = results.filter((r) => r.basic && !r.ok);
  for (const r of failed) log.error("check", `${r.name}: ${r.text}`);
  if (failed.length) {
    out("Does not look good.");
    return 1;
  }
  out("Looks good.");
  return 0;
}
