// getopt_long(3) as glibc does it, over the option table (criu-options.ts): argument permutation
// (options may follow the command word), `--` ends options, bundled short flags (-dj), short
// arguments attached or separate (-D3, -D 3), optional arguments only attached (-v4, -vv,
// --verbosity=4; a bare --verbosity or -v adds one level), long options as --name=value or
// --name value, unambiguous prefixes of long names (--tcp-est), --no-NAME for criu's BOOL_OPTs.
// Values stay strings; numbers are read where they are used, with C's atoi.
//
// No imports beyond the table: the --version path runs through here.
import { CRIU_OPTIONS, CRIU_BUN_OPTIONS, type CriuOption } from "./criu-options";

/** One option as given: the table entry, the value set, where it came from. */
export interface Given {
  opt: CriuOption;
  /** true/false for flags (false from --no-NAME), the argument string, or undefined for an optional argument left out */
  value: string | boolean | undefined;
  /** how the user spelled it (-t, --tree, --no-shell-job), for messages */
  spelled: string;
  /** "FILE:LINE" for config files, undefined for the command line */
  where?: string;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

interface LongEntry {
  name: string;
  opt: CriuOption;
  neg: boolean;
}

const LONG: LongEntry[] = [];
const SHORT = new Map<string, CriuOption>();
for (const opt of [...CRIU_OPTIONS, ...CRIU_BUN_OPTIONS]) {
  LONG.push({ name: opt.name, opt, neg: false });
  if (opt.negatable) LONG.push({ name: `no-${opt.name}`, opt, neg: true });
  if (opt.short) SHORT.set(opt.short, opt);
}

/**
 * Find a long option as glibc does: an exact name wins; otherwise a unique prefix; several
 * prefixes are fine only if they all set the same field the same way (--daemon and
 * --restore-detached), else the option is ambiguous.
 */
function findLong(name: string, where: string): LongEntry {
  const exact = LONG.find((l) => l.name === name);
  if (exact) return exact;
  const cands = name ? LONG.filter((l) => l.name.startsWith(name)) : [];
  if (!cands.length) throw new UsageError(`${where}unrecognized option '--${name}'`);
  const first = cands[0];
  const same = cands.every(
    (c) =>
      c.opt.key === first.opt.key &&
      c.neg === first.neg &&
      c.opt.arg === first.opt.arg &&
      (c.opt === first.opt || c.opt.arg === "none")
  );
  if (!same)
    throw new UsageError(
      `${where}option '--${name}' is ambiguous; possibilities: ${cands.map((c) => `'--${c.name}'`).join(" ")}`
    );
  return first;
}

interface GetoptResult {
  given: Given[];
  /** non-option arguments in order (the command word first), including everything after `--` */
  positional: string[];
  /** index in positional of the first argument that came after `--` (positional.length if none) */
  afterDashDash: number;
}

/**
 * Parse argv (without the program name). `where` prefixes messages ("FILE:LINE: ").
 * Throws UsageError with glibc's wording for unknown, ambiguous or malformed options.
 */
export function getoptLong(
  argv: readonly string[],
  where = "",
  whereOf?: (i: number) => string | undefined
): GetoptResult {
  const given: Given[] = [];
  const positional: string[] = [];
  let afterDashDash = -1;
  const posix = !!process.env.POSIXLY_CORRECT;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const w = whereOf?.(i);
    const pre = w ? `${w}: ` : where;
    if (a === "--") {
      afterDashDash = positional.length;
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (a.length < 2 || a[0] !== "-") {
      if (posix) {
        afterDashDash = positional.length;
        positional.push(...argv.slice(i));
        break;
      }
      positional.push(a);
      continue;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const l = findLong(name, pre);
      const opt = l.opt;
      const spelled = `--${l.name}`;
      if (opt.arg === "none") {
        if (eq >= 0) throw new UsageError(`${pre}option '${spelled}' doesn't allow an argument`);
        given.push({ opt, value: !l.neg, spelled, where: w });
      } else if (eq >= 0) {
        given.push({ opt, value: a.slice(eq + 1), spelled, where: w });
      } else if (opt.arg === "required") {
        if (i + 1 >= argv.length) throw new UsageError(`${pre}option '${spelled}' requires an argument`);
        given.push({ opt, value: argv[++i], spelled, where: w });
      } else {
        given.push({ opt, value: undefined, spelled, where: w });
      }
      continue;
    }
    // a cluster of short options: -dj, -D3, -v, -vvv, -v4
    for (let k = 1; k < a.length; k++) {
      const c = a[k];
      const opt = SHORT.get(c);
      if (!opt) throw new UsageError(`${pre}invalid option -- '${c}'`);
      const spelled = `-${c}`;
      if (opt.arg === "none") {
        given.push({ opt, value: true, spelled, where: w });
        continue;
      }
      const rest = a.slice(k + 1);
      if (rest) given.push({ opt, value: rest, spelled, where: w });
      else if (opt.arg === "optional") given.push({ opt, value: undefined, spelled, where: w });
      else if (i + 1 < argv.length) given.push({ opt, value: argv[++i], spelled, where: w });
      else throw new UsageError(`${pre}option requires an argument -- '${c}'`);
      break;
    }
  }
  return { given, positional, afterDashDash: afterDashDash < 0 ? positional.length : afterDashDash };
}

/** C's atoi: leading blanks, an optional sign, digits; anything else ends the number (no digits: 0). */
export function atoi(s: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?\d+)/.exec(s);
  if (!m) return 0;
  const n = Number(m[1]);
  // int overflow is undefined in C; clamp like strtol then truncate to 32 bits
  return Math.max(-2147483648, Math.min(2147483647, n)) | 0;
}
