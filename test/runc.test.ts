// Container runtimes: criu-bun installed as `criu` (install --as-criu) answers as criu does, and
// runc drives it. Until mount namespaces are supported, a container's dump must be refused with
// one line in dump.log (runc greps it for "Error") while the container keeps running, frozen by
// nothing: runc gets past its CRIU version check and sends DUMP, criu-bun refuses what it cannot
// restore exactly. The bundle (busybox, a counter in its rootfs) is built here and removed after.
import { afterAll, expect, test } from "bun:test";
import { closeSync, openSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { criuBun, REPO_ROOT, waitUntil, holdsFor } from "./harness";

const tmp = mkdtempSync(join(tmpdir(), "criu-bun-runc-"));
const containers: string[] = [];
afterAll(() => {
  for (const id of containers) Bun.spawnSync(["runc", "delete", "-f", id]);
  rmSync(tmp, { recursive: true, force: true });
});

const runc = Bun.which("runc");
const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
const built = existsSync(join(REPO_ROOT, "criu-bun"));

/** criu-bun as `criu` in a directory of our own */
function installAsCriu(): string {
  const bin = join(tmp, "bin");
  mkdirSync(bin, { recursive: true });
  const r = criuBun(["install", "--as-criu", "--prefix", bin]);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return join(bin, "criu");
}

test.skipIf(!built)("install --as-criu: a symlink named criu that answers --version as criu 4.2, criu-bun's version in GitID; a foreign criu is left alone", () => {
  const criu = installAsCriu();
  const v = Bun.spawnSync([criu, "--version"]);
  expect(v.stdout.toString()).toMatch(/^Version: 4\.2\nGitID: criu_bun \d+\.\d+\.\d+\n$/);
  expect(criuBun(["install", "--as-criu", "--prefix", join(tmp, "bin")]).stdout).toContain("(already)");
  const other = join(tmp, "other");
  mkdirSync(other);
  symlinkSync("/bin/true", join(other, "criu"));
  const r = criuBun(["install", "--as-criu", "--prefix", other]);
  expect(r.code).toBe(1);
  expect(r.stderr.trim()).toBe(`Error (install): ${join(other, "criu")} already points to /bin/true; remove it first`);
});

/** a busybox OCI bundle whose shell counts into /tmp/count in its rootfs */
function bundle(): string {
  const b = join(tmp, "bundle");
  for (const d of ["bin", "tmp", "proc", "dev", "sys"]) mkdirSync(join(b, "rootfs", d), { recursive: true });
  cpSync(busybox!, join(b, "rootfs/bin/busybox"));
  for (const a of ["sh", "sleep"]) symlinkSync("busybox", join(b, "rootfs/bin", a));
  const spec = Bun.spawnSync(["runc", "spec"], { cwd: b });
  expect(spec.exitCode).toBe(0);
  const c = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
  c.process.terminal = false;
  c.process.args = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"];
  c.root.readonly = false;
  writeFileSync(join(b, "config.json"), JSON.stringify(c));
  return b;
}

test.skipIf(!runc || !busybox || !built)("runc checkpoint: past the version probe to DUMP; the container is refused with one line and keeps running", async () => {
  const criu = installAsCriu();
  const b = bundle();
  const id = `criu-bun-${process.pid}`;
  containers.push(id);
  // the container keeps the stdio runc gives it: a file, not a pipe someone waits on
  const errFile = join(tmp, "run.err");
  const errFd = openSync(errFile, "w", 0o600);
  const run = Bun.spawnSync(["runc", "run", "-d", id], { cwd: b, stdin: "ignore", stdout: errFd, stderr: errFd });
  closeSync(errFd);
  expect(readFileSync(errFile, "utf8")).toBe("");
  expect(run.exitCode).toBe(0);
  const count = () => Number(readFileSync(join(b, "rootfs/tmp/count"), "utf8").trim() || 0);
  await waitUntil("the counter", () => existsSync(join(b, "rootfs/tmp/count")) && count() > 2);
  const img = join(tmp, "img");
  mkdirSync(img);
  const ck = Bun.spawnSync(["runc", "--criu", criu, "checkpoint", "--image-path", img, "--work-path", img, id], { stdout: "pipe", stderr: "pipe", timeout: 60000 });
  const err = ck.stderr.toString();
  expect(err).not.toContain("version check failed");
  expect(err).toContain("criu failed: type ");
  expect(ck.exitCode).not.toBe(0);
  const log = readFileSync(join(img, "dump.log"), "utf8");
  // the request runc sent: what a container needs (its root, mounts, netns left alone, freezer)
  expect(log).toMatch(/rpc: dump with .*root=.*empty_ns=1073741824/);
  const errors = log.split("\n").filter((l) => l.includes("Error"));
  expect(errors).toHaveLength(1);
  // refused with one line naming what criu-bun cannot restore exactly (today: the container's stdio
  // file on a mount outside its mount namespace), after runc answered the dump's notifications
  expect(errors[0]).toMatch(/Error \([a-z]+\): .*(not supported|refused)/);
  expect(log).toContain("Running pre-dump scripts");
  // still running, not frozen, not stopped
  const state = JSON.parse(Bun.spawnSync(["runc", "state", id]).stdout.toString());
  expect(state.status).toBe("running");
  const before = count();
  await waitUntil("the counter to go on", () => count() > before + 2);
  await holdsFor("the container running", () => JSON.parse(Bun.spawnSync(["runc", "state", id]).stdout.toString()).status === "running", 200);
}, 90000);
