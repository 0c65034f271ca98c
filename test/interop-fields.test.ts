// Fields CRIU 4.2 writes that criu-bun's restore once ignored (its schema lacked them), each
// restored from CRIU 4.2's images and written by criu-bun's dumps where CRIU reads them:
// no_new_privs (creds_entry field 18; criu-bun also keeps thread_core field 1001): a seccomp
// workload (no_new_privs and two filters) dumped by either tool is restored by the other;
// a memfd's mode (memfd_inode_entry field 9, st_mode): a memfd fchmod'ed to 0640 (and fchown'ed), dumped by
// CRIU 4.2 and by criu-bun, is restored with that mode and owner.
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanup, criuBunCommand, REPO_ROOT, startWorkload, trigger, waitResult, waitUntil } from "./harness";
import { readImage, writeImage } from "../src/images/image";
import { clone, create } from "@bufbuild/protobuf";
import * as S from "../src/images/schemas";

const PEER = process.env.CRIU_PEER ?? join(REPO_ROOT, "..", "shared", "tools", "criu-4.2");
const have = existsSync(PEER) && process.getuid?.() === 0;
if (!existsSync(PEER)) console.warn(`SKIP interop-fields: ${PEER} is missing (the reference CRIU 4.2)`);
const tmp = mkdtempSync(join(tmpdir(), "criu-bun-fields-"));
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
    // its pty index is free again only once it is gone (the next case needs the same index)
    await waitUntil("the restored workload to be gone", () => !existsSync(`/proc/${w.pid}`), 10000);
  });
}

test.skipIf(!have)("criu-4.2 dumps a memfd fchmod'ed to 0640 and fchown'ed, criu-bun restores it with that mode and owner", async () => {
  const w = await startWorkload("exact", ["memfdmode"]);
  const dir = mkdtempSync(join(tmp, "memfd-mode-"));
  run("criu-4.2", ["dump", "-t", String(w.pid)], dir);
  await w.proc!.exited;
  const [ie] = readImage<S.memfd_inode_entry>(dir, "memfd.img", "MEMFD_INODE");
  expect(ie.mode & 0o7777).toBe(0o640);
  expect([ie.uid, ie.gid]).toEqual([4242, 4243]);
  run("criu-bun", ["restore", "-d"], dir);
  trigger(w);
  const r = await waitResult(w, 15000);
  expect(r.summary).toBe("PASS");
});

test.skipIf(!have)("criu-bun dumps a memfd fchmod'ed to 0640 and fchown'ed, criu-4.2 restores it with that mode and owner", async () => {
  const w = await startWorkload("exact", ["memfdmode"]);
  const dir = mkdtempSync(join(tmp, "memfd-mode-ours-"));
  run("criu-bun", ["dump", "-t", String(w.pid)], dir);
  await w.proc!.exited;
  const [ie] = readImage<S.memfd_inode_entry>(dir, "memfd.img", "MEMFD_INODE");
  expect([ie.mode & 0o7777, ie.uid, ie.gid]).toEqual([0o640, 4242, 4243]);
  run("criu-4.2", ["restore", "-d"], dir);
  trigger(w);
  const r = await waitResult(w, 15000);
  expect(r.summary).toBe("PASS");
});

test("criu-bun writes a memfd's st_mode, as CRIU 4.2 does", async () => {
  const w = await startWorkload("memfd");
  const dir = mkdtempSync(join(tmp, "memfd-ours-"));
  run("criu-bun", ["dump", "-t", String(w.pid), "-R"], dir);
  for (const ie of readImage<S.memfd_inode_entry>(dir, "memfd.img", "MEMFD_INODE")) expect(ie.mode).toBe(0o100777);
});

test.skipIf(!have)("a CRIU 4.2 image with membarrier registrations or CET shadow stack state is refused in one line naming the file, nothing restored", async () => {
  const w = await startWorkload("counter");
  const dir = mkdtempSync(join(tmp, "refused-"));
  run("criu-4.2", ["dump", "-t", String(w.pid)], dir);
  await w.proc!.exited;
  const file = `core-${w.pid}.img`;
  const orig = readImage<S.core_entry>(dir, file, "CORE")[0];
  for (const [what, change, line] of [
    ["membarrier", (c: any) => { c.tc.membarrierRegistrationMask = 0x8; }, `membarrier registrations (mask 0x8) cannot be restored by criu-bun yet`],
    ["cet", (c: any) => { c.threadInfo.fpregs.xsave.cet = create(S.user_x86_cet_entrySchema, { cet: 1n, ssp: 0x7ff000n }); }, `CET shadow stack state (cet 0x1, ssp 0x7ff000) cannot be restored by criu-bun yet`],
  ] as const) {
    const c: any = clone(S.core_entrySchema, orig);
    change(c);
    writeImage(dir, file, "CORE", [c]);
    const r = Bun.spawnSync([...criuBunCommand(), "restore", "-d", "-D", dir], { stdout: "pipe", stderr: "pipe" });
    expect(`${what}: ${r.exitCode} ${r.stderr.toString()}`).toBe(`${what}: 1 Error (restore): ${join(dir, file)}: ${line}\n`);
    expect(existsSync(`/proc/${w.pid}`)).toBe(false);
  }
});

for (const [dumper, restorer] of [["criu-bun", "criu-4.2"], ["criu-4.2", "criu-bun"]] as const) {
  test.skipIf(!have)(`${dumper} dumps a pty pair whose slave was chown()ed, ${restorer} restores it: same owner, both ends work`, async () => {
    const w = await startWorkload("exact", ["ptyowner"]);
    const dir = mkdtempSync(join(tmp, `pty-${dumper}-`));
    run(dumper, ["dump", "-t", String(w.pid)], dir);
    await w.proc!.exited;
    // CRIU's numbering, which CRIU pairs master and slave by: (index << 1) + 1 for the master, index << 1 for the slave
    const infos = readImage<S.tty_info_entry>(dir, "tty-info.img", "TTY_INFO");
    expect(infos.map((i) => i.id - i.pty!.index * 2).sort()).toEqual([0, 1]);
    // every tty entry names its path through a regular-file entry (CRIU refuses one without)
    const files = readImage<S.file_entry>(dir, "files.img", "FILES");
    for (const f of files.filter((x) => x.tty)) expect(files.find((x) => x.id === f.tty!.regfId)?.reg?.name).toMatch(/^\/dev\/(ptmx|pts\/\d+)$/);
    run(restorer, ["restore", "-d"], dir);
    trigger(w);
    const r = await waitResult(w, 15000);
    expect(r.summary).toBe("PASS");
    // its pty index is free again only once it is gone (the next case needs the same index)
    await waitUntil("the restored workload to be gone", () => !existsSync(`/proc/${w.pid}`), 10000);
  });
}
