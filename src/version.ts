// Imports nothing: src/main.ts prints --version from here before loading any other module.
// criu-bun's own version, and the CRIU release whose command line, images and behaviour it
// implements. `--version` prints them as criu does ("Version: X.Y", then "GitID: ..."):
// LXC reads the first line with fscanf("Version: %[^\n]") and compares it as a string, runc and
// go-criu compute major*10000 + minor*100 (+ sublevel) from it. The GitID line has no '-',
// so parsers that treat a '-' as a git-describe suffix ("v4.2-22-g...") leave it alone.
const VERSION = "0.1.0";
export const CRIU_LEVEL = "4.2";
/** The one gitid string: `--version`'s GitID line, the log's first line and swrk's VERSION answer. */
export const GITID = `criu_bun ${VERSION}`;

export function versionText(): string {
  return `Version: ${CRIU_LEVEL}\nGitID: ${GITID}\n`;
}

/** The first line of every log, as criu's "Version: 4.2 (gitid ...)". */
export function versionLine(): string {
  return `Version: ${CRIU_LEVEL} (gitid ${GITID})`;
}

/** The command that runs this criu-bun again (the compiled executable, or bun with the entry script). */
export function selfCommand(): string[] {
  const script = process.argv[1];
  return script && !script.startsWith("/$bunfs/") ? [process.execPath, script] : [process.execPath];
}
