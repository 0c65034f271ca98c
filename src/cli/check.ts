// criu-bun check, with criu's semantics:
//   check                   the basic probes; "Looks good." and exit 0, else the failures, "Does not look good." and 1
//   check --extra           also every other probe; --experimental: also criu's experimental features
//   check --all             both; one line per feature ("NAME ... yes" / "NAME ... no (reason)"), then "Looks good."
//                           or criu's "Looks good but some kernel features are missing ..." with exit 1
//   check --feature NAME    exit 0 if NAME works ("NAME is supported"), 1 if not or if criu-bun does not
//                           implement it ("unsupported by criu-bun"); every CRIU 4.2 name and criu-bun's own;
//                           --feature list prints them
import { CriuError, log } from "../log";
import { PROBES, findProbe, runProbe, featureNames, UNSUPPORTED_FEATURES, type ProbeResult } from "../check/index";
import type { Opts } from "./options";

const MAYBE =
  "Looks good but some kernel features are missing\nwhich, depending on your process tree, may cause\ndump or restore failure.";
/** criu's experimental category */
const EXPERIMENTAL = ["autofs", "compat_cr"];

function out(line: string) {
  process.stdout.write(line + "\n");
}

function line(r: ProbeResult): string {
  return `${r.name} ... ${r.ok ? "yes" : `no (${r.text})`}`;
}

function unsupported(name: string): ProbeResult {
  return { name, basic: false, ok: false, text: `unsupported by criu-bun: ${UNSUPPORTED_FEATURES[name]}`, ms: 0 };
}

export async function run(opts: Opts, args: string[]): Promise<number> {
  if (args.length) throw new CriuError("check", `unexpected argument '${args[0]}'`);
  if (opts.feature !== undefined) {
    const names = (Array.isArray(opts.feature) ? opts.feature : [opts.feature]).map(String);
    if (names.includes("list")) {
      for (const n of featureNames()) out(n);
      return 0;
    }
    for (const n of names)
      if (!findProbe(n) && !UNSUPPORTED_FEATURES[n])
        throw new CriuError("check", `unknown feature ${n} (see --feature list)`);
    let code = 0;
    for (const n of names) {
      const p = findProbe(n);
      if (!p) {
        log.error("check", `${n} is unsupported by criu-bun: ${UNSUPPORTED_FEATURES[n]}`);
        code = 1;
        continue;
      }
      const r = runProbe(p);
      if (r.ok) out(`${p.name} is supported`);
      else {
        log.error("check", `${p.name} is not supported: ${r.text}`);
        code = 1;
      }
    }
    return code;
  }
  const extra = !!(opts.all || opts.extra),
    experimental = !!(opts.all || opts.experimental);
  const results = (extra ? PROBES : PROBES.filter((p) => p.basic)).map(runProbe);
  if (experimental) results.push(...EXPERIMENTAL.map((n) => (findProbe(n) ? runProbe(findProbe(n)!) : unsupported(n))));
  if (extra || experimental) for (const r of results) out(line(r));
  const failed = results.filter((r) => r.basic && !r.ok);
  for (const r of failed) log.error("check", `${r.name}: ${r.text}`);
  if (failed.length) {
    out("Does not look good.");
    return 1;
  }
  if (results.some((r) => !r.ok)) {
    out(MAYBE);
    return 1;
  }
  out("Looks good.");
  return 0;
}
