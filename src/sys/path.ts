// The part of node:path criu-bun uses (POSIX): join, resolve, dirname, basename, isAbsolute, with
// node:path's results. Plain code, so that no runtime module is loaded for it (sys/fs.ts says why).

/** "a//b/./c/../d/" -> "a/b/d/": the path's segments resolved; a trailing slash kept */
export function normalize(p: string): string {
  if (p === "") return ".";
  const abs = p.startsWith("/");
  const trailing = p.endsWith("/");
  const out: string[] = [];
  for (const s of p.split("/")) {
    if (s === "" || s === ".") continue;
    if (s === "..") {
      if (out.length && out[out.length - 1] !== "..") out.pop();
      else if (!abs) out.push("..");
    } else out.push(s);
  }
  let r = out.join("/");
  if (r === "") return abs ? "/" : trailing ? "./" : ".";
  if (trailing) r += "/";
  return abs ? `/${r}` : r;
}

export function join(...parts: string[]): string {
  const p = parts.filter((x) => x !== "").join("/");
  return p === "" ? "." : normalize(p);
}

/** The absolute path: parts from the right until one is absolute, then the cwd; no trailing slash */
export function resolve(...parts: string[]): string {
  let p = "";
  for (let i = parts.length - 1; i >= 0 && !p.startsWith("/"); i--)
    if (parts[i] !== "") p = p ? `${parts[i]}/${p}` : parts[i];
  if (!p.startsWith("/")) p = p ? `${process.cwd()}/${p}` : process.cwd();
  const n = normalize(p);
  return n.length > 1 && n.endsWith("/") ? n.slice(0, -1) : n;
}

export function isAbsolute(p: string): boolean {
  return p.startsWith("/");
}

export function dirname(p: string): string {
  if (p === "") return ".";
  const root = p[0] === "/";
  // the last slash that follows a name; the slashes before it stay, as node:path keeps them
  let end = -1;
  let slashes = true;
  for (let i = p.length - 1; i >= 1; i--) {
    if (p[i] === "/") {
      if (!slashes) {
        end = i;
        break;
      }
    } else slashes = false;
  }
  if (end === -1) return root ? "/" : ".";
  if (root && end === 1) return "//";
  return p.slice(0, end);
}

export function basename(p: string, ext?: string): string {
  let end = p.length;
  while (end > 0 && p[end - 1] === "/") end--;
  const b = p.slice(p.lastIndexOf("/", end - 1) + 1, end);
  return ext && b !== ext && b.endsWith(ext) ? b.slice(0, -ext.length) : b;
}
