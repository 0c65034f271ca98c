// --action-script for the command line: criu runs each script (in the order given) at every
// notification point with CRTOOLS_SCRIPT_ACTION and its environment (src/hooks.ts ScriptHooks,
// the mechanism RPC notifications share). criu runs in its work dir, so a relative script path
// is taken from there; CRTOOLS_IMAGE_DIR is the images directory as an absolute path.
import { isAbsolute, join, resolve } from "../sys/path";
import { ScriptHooks } from "../hooks";
import type { Opts } from "./options";

export function scriptHooks(opts: Opts): ScriptHooks | undefined {
  const list = Array.isArray(opts.actionScript) ? opts.actionScript.map(String) : [];
  if (!list.length) return undefined;
  const work = resolve(opts.workDir ?? opts.imagesDir);
  return new ScriptHooks(
    list.map((s) => (isAbsolute(s) ? s : join(work, s))),
    resolve(opts.imagesDir)
  );
}
