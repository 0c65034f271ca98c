// Options as criu spells them. Parsed values reach commands as `Opts`.
export interface Opts {
  tree?: number;
  imagesDir: string;
  workDir?: string;
  logFile?: string;
  verbosity: number;
  leaveRunning?: boolean;
  leaveStopped?: boolean;
  restoreDetached?: boolean;
  shellJob?: boolean;
  tcpEstablished?: boolean;
  tcpClose?: boolean;
  pidfile?: string;
  manageCgroups?: string | boolean;
  displayStats?: boolean;
  timeout?: number;
  compress?: boolean;
  feature?: string;
  all?: boolean;
  dir?: string;
  [k: string]: unknown;
}

/**
 * criu accepts -v, -vv, -vvv and -vN; cac (mri) would read "-v4" as two flags.
 * Rewrite those spellings to --verbosity=N before parsing. Default level is 2, each v adds one.
 */
export function normalizeArgv(argv: string[]): string[] {
  const out: string[] = [];
  for (const a of argv) {
    let m: RegExpMatchArray | null;
    if ((m = a.match(/^-v(\d)$/))) out.push(`--verbosity=${m[1]}`);
    else if ((m = a.match(/^-(v+)$/))) out.push(`--verbosity=${Math.min(4, 2 + m[1].length)}`);
    else if (a === "--") { out.push(...argv.slice(argv.indexOf(a))); break; }
    else out.push(a);
  }
  return out;
}
