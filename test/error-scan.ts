// The scan behind error-lines.test.ts: lines of src/ that print an errno without the helper of
// src/sys/errno.ts (errnoText/sysFailed). Kept apart so a script can count them in any tree.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

export function sources(dir: string, out: string[] = []): string[] {
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) {
      if (n !== "gen") sources(p, out);
    } else if (n.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** Ways of printing an errno without the helper, each with the lines it must not match. */
export const BARE: { what: string; re: RegExp }[] = [
  // a negated result printed as it is: "failed (${-r})", "(${-w})"
  { what: "a bare errno number", re: /\(\$\{-[\w.]+\}\)|errno \$\{-?[\w.]+\}|["'`]errno ["'`] *\+/ },
  // the raw result of a call in parentheses: "failed (${r})"
  { what: "a raw result as the failure", re: /failed \(\$\{[\w.]+\}\)/ },
  // node:fs's code alone: "${e.code ?? e.message}"
  { what: "node's error code alone", re: /[\w)]\??\.code \?\? |\$\{\w+\??\.code\}/ },
  // a name alone in a message
  { what: "an errno name alone", re: /`[^`]*\$\{[^}]*errnoName\(/ },
  // the errno part not after ": " ("failed (ENOENT (errno 2: ...))")
  { what: "the errno part in parentheses", re: /\(\$\{errnoText\(/ },
];

/** Pieces of lines that match a pattern above but print no errno. */
export const ALLOWED: string[] = [
  "process ${-pid} is a zombie", // lazy-pages: a zombie's PID is sent negated, not an errno
];

export function bareErrnoLines(root: string): string[] {
  const found: string[] = [];
  for (const f of sources(root)) {
    const rel = relative(root, f);
    if (rel === join("sys", "errno.ts")) continue;
    readFileSync(f, "utf8")
      .split("\n")
      .forEach((line, i) => {
        if (/^\s*(\/\/|\*)/.test(line)) return;
        for (const b of BARE) {
          if (!b.re.test(line)) continue;
          if (ALLOWED.some((piece) => line.includes(piece))) continue;
          found.push(`src/${rel}:${i + 1}: ${b.what}: ${line.trim().slice(0, 160)}`);
        }
      });
  }
  return found;
}
