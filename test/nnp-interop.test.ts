// no_new_privs across the two tools: CRIU 4.2 keeps it in creds_entry.no_new_privs (field 18),
// criu-bun in thread_core field 1001 and, since it learned CRIU's field, in creds too. A seccomp
// workload (no_new_privs and two filters) dumped by either is restored by the other and checks
// itself; the images carry CRIU's field.
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanup, criuBunCommand, REPO_ROOT, startWorkload, trigger, waitResult } from "./harness";
import { readImage } from "../src/images/image";
import type * as S from "../src/images/schemas";

const PEER = process.env.CRIU_PEER ?? join(REPO_ROOT, "..", "shared", "tools", "criu-4.2");
const have = existsSync(PEER) && process.getuid?.() === 0;
if (!existsSync(PEER)) console.warn(`SKIP nnp-interop: ${PEER} is missing (the reference CRIU 4.2)`);
const tmp = mkdtempSync(join(tmpdir(), "criu-bun-nnp-"));
afterAll(() => { cleanup(); rmSync(tmp, { recursive: true, force: true }); });

function run(tool: "criu-bun" | "criu-4.2", args: string[], dir: string) {
  const cmd = tool === "criu-bun" ? [...criuBunCommand(), ...args] : [PEER, ...args];
  const r = Bun.spawnSync([...cmd, "-D", dir, "-o", `${args[0]}.log`, "-v4"], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) {
    const log = (() => { try { return readFileSync(join(dir, `${args[0]}.log`), "utf8"); } catch { return ""; } })();
    throw new Error(`${tool} ${args[0]} failed: ${r.stderr}${log.split("\n").filter((l) => l.includes("Error") && !l.includes("RLIMIT_NOFILE")).slice(0, 4).join("\n")}`);
  }
}

for (const [dumper, restorer] of [["criu-4.2", "criu-bun"], ["criu-bun", "criu-4.2"]] as const) {
  test.skipIf(!have)(`${dumper} dumps, ${restorer} restores: no_new_privs and the seccomp filters still apply`, async () => {
    const w = await startWorkload("seccomp");
    const dir = mkdtempSync(join(tmp, `${dumper}-`));
    run(dumper, ["dump", "-t", String(w.pid)], dir);
    await w.proc!.exited;
    const core = readImage<S.core_entry>(dir, `core-${w.pid}.img`, "CORE")[0];
    expect(core.threadCore?.creds?.noNewPrivs).toBe(1); // CRIU's field, from both tools
    run(restorer, ["restore", "-d"], dir);
    trigger(w);
    const r = await waitResult(w, 15000);
    expect(r.summary).toBe("PASS");
  });
}
