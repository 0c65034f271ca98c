import { CriuError } from "../log";
import type { Opts } from "./options";

/** Why a command of criu's is refused (one line, named with the command's own words). */
const WHY: Record<string, string> = {
  cpuinfo:
    "cpuinfo.img is not written or checked; a restore compares this CPU's xsave features with the dumped registers itself",
};

export function run(name: string) {
  return async (_o: Opts, a: string[]): Promise<number> => {
    const what = name === "cpuinfo" && a.length ? `cpuinfo ${a.join(" ")}` : name;
    throw new CriuError(name, `'${what}' is not supported by criu-bun yet${WHY[name] ? ` (${WHY[name]})` : ""}`);
  };
}
