// Mount namespaces and root directories: what criu-bun restores exactly (a private copy of its own
// mounts) and what it refuses at dump (a container's own root file system, foreign mounts, a chroot),
// leaving the target running.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { buildWorkloads, cleanup, criuBun, startWorkload, trigger, waitResult } from "./harness";
import { cleanupImages, dump, imagesDir, restore } from "./engine-helpers";

beforeAll(async () => { await buildWorkloads(); }, 120_000);
const spawned: Subprocess[] = [];
const tmp: string[] = [];
afterAll(() => {
  for (const p of spawned) try { process.kill(-p.pid, "SIGKILL"); } catch {}
  cleanup(); cleanupImages();
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

async function waitFor<T>(fn: () => T | undefined | false, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}
const read = (p: string) => { try { return readFileSync(p, "utf8"); } catch { return ""; } };

/** A minimal root file system: busybox-static and its applets. */
function busyboxRootfs(): string {
  const r = mkdtempSync(join(tmpdir(), "criu-bun-rootfs-"));
  tmp.push(r);
  for (const d of ["bin", "proc", "dev", "tmp", "old", "data"]) mkdirSync(join(r, d));
  copyFileSync("/bin/busybox", join(r, "bin/busybox"));
  Bun.spawnSync(["chmod", "755", join(r, "bin/busybox")]);
  for (const a of ["sh", "sleep", "cat", "echo", "mount", "umount", "ls"]) symlinkSync("busybox", join(r, "bin", a));
  return r;
}

/**
 * A container as runtimes make it: `unshare -m --fork`, the rootfs bind-mounted on itself,
 * pivot_root into it, the old root detached, /proc mounted; inside, a busybox shell counts into
 * /tmp/count (visible here through the rootfs directory). Returns the shell's PID.
 */
async function startContainer(rootfs: string): Promise<{ pid: number; outer: Subprocess }> {
  const inner = "umount -l /old && mount -t proc proc /proc && echo $$ > /pid && i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done";
  const outer = Bun.spawn(["unshare", "-m", "--fork", "sh", "-c",
    'set -e; mount --make-rprivate /; mount --bind "$0" "$0"; cd "$0"; pivot_root . old; exec /old/bin/busybox chroot . /bin/sh -c "$1"', rootfs, inner],
  { stdin: "ignore", stdout: "ignore", stderr: "ignore", detached: true });
  spawned.push(outer);
  const pid = await waitFor(() => Number(read(join(rootfs, "pid"))) || undefined, 10000, "the container's shell");
  return { pid, outer };
}

async function counting(rootfs: string) {
  const a = Number(read(join(rootfs, "tmp/count")));
  await waitFor(() => Number(read(join(rootfs, "tmp/count"))) > a + 2, 5000, "the counter to advance");
}

describe("mount namespaces", () => {
  test("a container (own mount namespace, pivot_root into a busybox rootfs) is refused at dump with one line, and keeps running", async () => {
    const rootfs = busyboxRootfs();
    const { pid, outer } = await startContainer(rootfs);
    expect(readlinkSync(`/proc/${pid}/ns/mnt`)).not.toBe(readlinkSync("/proc/self/ns/mnt"));
    const dir = imagesDir("container");
    const r = criuBun(["dump", "-t", String(pid), "-D", dir]);
    expect(r.code).not.toBe(0);
    const ns = readlinkSync(`/proc/${pid}/ns/mnt`).replace(/[[\]]/g, "\\$&");
    expect(r.stderr.trim()).toMatch(new RegExp(`^Error \\(dump\\): process ${pid} has a root directory other than criu-bun's in its own mount namespace \\(${ns}\\); container root file systems are not supported yet$`));
    expect(r.stderr.trim().split("\n").length).toBe(1);
    expect(existsSync(join(dir, "inventory.img"))).toBe(false);
    await counting(rootfs); // not left frozen, not killed
    expect(readFileSync(`/proc/${pid}/stat`, "latin1").replace(/^.*\) /s, "")[0]).not.toMatch(/[tTZ]/);
    process.kill(-outer.pid, "SIGKILL");
    await outer.exited;
  }, 30000);

  test("a mount namespace with a mount criu-bun's lacks is refused naming that mount; a chroot is refused", async () => {
    const w = await startWorkload("counter", [], { wrap: ["unshare", "-m", "sh", "-c", 'mount -t tmpfs criu-bun-extra /mnt; exec "$0" "$@"'] });
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("mntns-extra")]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim()).toMatch(new RegExp(`^Error \\(dump\\): process ${w.pid} is in its own mount namespace \\(mnt:\\[\\d+\\]\\) with mount '/mnt' \\(tmpfs criu-bun-extra\\) that criu-bun's namespace does not have; only a private copy of criu-bun's mounts is supported yet$`));
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");

    const rootfs = busyboxRootfs();
    const sh = Bun.spawn(["chroot", rootfs, "/bin/sh", "-c", "echo $$ > /pid; exec sleep 1000"], { stdin: "ignore", stdout: "ignore", stderr: "ignore", detached: true });
    spawned.push(sh);
    const pid = await waitFor(() => Number(read(join(rootfs, "pid"))) || undefined, 10000, "the chrooted shell");
    const rc = criuBun(["dump", "-t", String(pid), "-D", imagesDir("chroot")]);
    expect(rc.code).not.toBe(0);
    expect(rc.stderr.trim()).toBe(`Error (dump): process ${pid} has a root directory other than criu-bun's (chroot to ${rootfs}); container root file systems are not supported yet`);
    expect(existsSync(`/proc/${pid}`)).toBe(true);
    sh.kill(9);
  }, 30000);

  test("a private copy of criu-bun's mounts (unshare -m) comes back in a new mount namespace, not criu-bun's", async () => {
    const w = await startWorkload("counter", [], { wrap: ["unshare", "-m", "--"] });
    const mnt = (p: number) => readlinkSync(`/proc/${p}/ns/mnt`);
    expect(mnt(w.pid)).not.toBe(mnt(process.pid));
    const dir = imagesDir("mntns-copy");
    dump(w.pid, dir);
    const r = await restore(dir, w.pid);
    expect(mnt(w.pid)).not.toBe(mnt(process.pid));
    const table = (p: number | string) => readFileSync(`/proc/${p}/mountinfo`, "utf8").split("\n").filter(Boolean)
      .map((l) => { const f = l.split(" "); return [...f.slice(2, 6), ...f.slice(f.indexOf("-"))].join(" "); }).sort();
    expect(table(w.pid)).toEqual(table("self"));
    const lines = readFileSync(`/proc/${w.pid}/mountinfo`, "utf8").split("\n").filter(Boolean);
    expect(lines.filter((l) => / (shared|master):/.test(l))).toEqual([]); // all private, as dumped
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  }, 30000);
});
