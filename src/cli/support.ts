// What criu-bun does with each option a command receives: options it does not implement are
// refused with one line ("--stream: not supported by criu-bun yet") when the command would use
// them, before anything is touched; options criu ignores for that command are ignored (and said
// so at -v3); no-op options are logged. Shared by the CLI and the RPC front door.
import type { Given } from "./getopt";
import { refusal, type Command, type CriuOption } from "./criu-options";

/** Values of partly supported options that criu-bun refuses, and why. */
function refusedValue(o: CriuOption, v: string | boolean | undefined): string | undefined {
  switch (o.name) {
    case "ext-unix-sk":
      return typeof v === "string"
        ? `--ext-unix-sk=${v}: not supported by criu-bun yet (give --ext-unix-sk without socket inodes)`
        : undefined;
    case "manage-cgroups":
      return v === "props" || v === "full" || v === "strict"
        ? `--manage-cgroups=${v}: not supported by criu-bun yet (cgroup properties are not saved; soft, none and ignore work)`
        : undefined;
    case "network-lock":
      return v === "iptables"
        ? `--network-lock iptables: not supported by criu-bun yet (criu-bun locks the network with nftables; skip leaves it unlocked)`
        : undefined;
  }
  return undefined;
}

interface SupportVerdict {
  /** the first refusal line, if the command cannot run with these options */
  refused?: string;
  /** lines for the log (-v3): no-op options and options this command does not use */
  notes: string[];
}

/** Decide, for `command`, whether every option given can be honoured. */
export function checkSupport(command: Command, given: readonly Given[]): SupportVerdict {
  const notes: string[] = [];
  // a later setting of the same field overrides an earlier one (config file, then command line)
  const last = new Map<string, Given>();
  for (const g of given) if (!g.opt.repeat) last.set(g.opt.key, g);
  for (const g of given) {
    if (!g.opt.repeat && last.get(g.opt.key) !== g) continue;
    const o = g.opt;
    const from = g.where ? ` (${g.where})` : "";
    if (!o.commands.includes(command)) {
      notes.push(`${g.spelled}${from} has no effect on ${command}`);
      continue;
    }
    if (g.value === false) continue; // --no-NAME asks for criu's default: nothing to refuse
    if (o.support === "no") return { refused: refusal(o.name) + from, notes };
    const bad = refusedValue(o, g.value);
    if (bad) return { refused: bad + from, notes };
    if (o.support === "noop") notes.push(`${g.spelled}${from}: ${o.note}`);
  }
  return { notes };
}
