// criu's configuration files: /etc/criu/default.conf, then ~/.criu/default.conf (both skipped with
// --config or --no-default-config), then $CRIU_CONFIG_FILE, then --config FILE, then the command
// line (and, for RPC, the request's config_file last). Each line is one option without its dashes,
// optionally followed by one value, which may be in double quotes (\" inside); '#' starts a comment.
// Anything else on a line is an error naming the file and line (criu: "Unsupported configuration
// file format").
import { readFileSync, statSync } from "../sys/fs";
import { UsageError } from "./getopt";
import { errnoText, errorCode } from "../sys/errno";

export const GLOBAL_CONFIG = "/etc/criu/default.conf";
export const USER_CONFIG = ".criu/default.conf";

/** One config file line as criu turns it into getopt arguments: ["--name"] or ["--name", value]. */
export interface ConfigLine {
  line: number;
  argv: string[];
}

function parseConfigText(text: string, file: string): ConfigLine[] {
  const out: ConfigLine[] = [];
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const where = `${file}:${n + 1}`;
    const bad = (why: string) => new UsageError(`${where}: ${why} (one option per line: NAME [VALUE])`);
    const s = lines[n].replace(/\r$/, "").replace(/^[ \t\f\v\r]+/, "");
    if (s === "" || s.startsWith("#")) continue;
    const m = /^([^ \t]+)(?:[ \t]+(.*))?$/.exec(s)!;
    const opt = `--${m[1]}`;
    let rest = (m[2] ?? "").replace(/[ \t]+$/, "");
    if (rest === "" || rest.startsWith("#")) {
      out.push({ line: n + 1, argv: [opt] });
      continue;
    }
    let value: string;
    if (rest.startsWith('"')) {
      // up to the next quote not preceded by a backslash; \" stands for "
      let j = 1;
      for (; j < rest.length; j++) if (rest[j] === '"' && rest[j - 1] !== "\\") break;
      if (j >= rest.length) throw bad("unterminated quoted value");
      value = rest.slice(1, j).replace(/\\"/g, '"');
      const after = rest.slice(j + 1).trim();
      if (after && !after.startsWith("#")) throw bad(`unexpected '${after}' after the quoted value`);
    } else {
      const hash = rest.indexOf("#");
      if (hash >= 0) rest = rest.slice(0, hash).replace(/[ \t]+$/, "");
      if (/[ \t]/.test(rest)) throw bad(`more than one value: '${rest}'`);
      value = rest.replace(/\\"/g, '"');
    }
    out.push({ line: n + 1, argv: [opt, value] });
  }
  return out;
}

/** Read a config file; undefined if it does not exist (criu skips missing default files). */
export function readConfig(file: string): ConfigLine[] | undefined {
  let text: string;
  try {
    // the usual case, no such file, answered without an error made and thrown (0.3-0.5 ms each at start)
    if (!statSync(file, { throwIfNoEntry: false })) return undefined;
    text = readFileSync(file, "utf8");
  } catch (e) {
    if (errorCode(e) === "ENOENT") return undefined;
    throw new UsageError(`${file}: cannot read config file: ${errnoText(e)}`);
  }
  return parseConfigText(text, file);
}
