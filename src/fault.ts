// Fault injection for tests, in the spirit of criu's CRIU_FAULT: CRIU_BUN_FAULT=NAME makes the
// named step fail as a real error would, so tests can prove that failures leave nothing behind.
import { CriuError } from "./log";

export function fault(name: string, where: string) {
  if (process.env.CRIU_BUN_FAULT === name) throw new CriuError(where, `injected fault '${name}' (CRIU_BUN_FAULT)`);
}
