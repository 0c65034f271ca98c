// Mount namespaces and root directories: what criu-bun restores exactly (a private copy of its own
// mounts) and what it refuses at dump (a container's own root file system, foreign mounts, a chroot),
// leaving the target running.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import {
  buildWorkloads,
  cleanup,
  criuBun,
  criuBunCommand,
  startWorkload,
  trigger,
  waitFor,
  waitResult,
} from "./harness";
import { cleanupImages, dump, imagesDir, restore } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
const spawned: Subprocess[] = [];
const containers: number[] = [];
const tmp: string[] = [];
/** mounts this file made in the host's namespace (umounted after) */
const hostMounts: string[] = [];
function hostMount(args: string[]) {
  const r = Bun.spawnSync(["mount", ...args], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`mount ${args.join(" ")}: ${r.stderr}`);
  hostMounts.push(args[args.length - 1]);
}
function hostUmount(m: string) {
  expect(Bun.spawnSync(["umount", m]).exitCode).toBe(0);
  hostMounts.splice(hostMounts.lastIndexOf(m), 1);
}
afterAll(() => {
  for (const p of spawned)
    try {
      process.kill(-p.pid, "SIGKILL");
    } catch {}
  // the containers run setsid'ed (another process group), and restored ones are nobody's child here:
  // kill each by its session, only while that pid still lives in a mount namespace of its own
  for (const pid of containers) {
    try {
      if (readlinkSync(`/proc/${pid}/ns/mnt`) === readlinkSync("/proc/self/ns/mnt")) continue; // not a container (any more)
      const sid = Number(
        readFileSync(`/proc/${pid}/stat`, "latin1")
          .replace(/^.*\) /s, "")
          .split(" ")[3]
      );
      if (sid > 1)
        try {
          process.kill(-sid, "SIGKILL");
        } catch {}
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  cleanup();
  cleanupImages();
  for (const m of hostMounts.reverse()) Bun.spawnSync(["umount", "-l", m]);
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

/** every PID of a dumped tree, from its pstree.img (criu-bun show decode, crit's JSON) */
function dumpedPids(dir: string): number[] {
  const r = criuBun(["show", "decode", "-i", join(dir, "pstree.img")]);
  if (r.code !== 0) throw new Error(`show decode pstree.img: ${r.stderr}`);
  return JSON.parse(r.stdout).entries.flatMap((e: any) => [e.pid, ...(e.threads ?? [])]);
}

const CRIU42 = "/work/shared/tools/criu-4.2";
const read = (p: string) => {
  try {
    return readFileSync(p, "utf8");
  } catch {
    return "";
  }
};

/** A minimal root file system: busybox-static and its applets, a file to bind read-only. */
function busyboxRootfs(): string {
  const r = mkdtempSync(join(tmpdir(), "criu-bun-rootfs-"));
  tmp.push(r);
  for (const d of [
    "bin",
    "proc",
    "dev",
    "dev/pts",
    "tmp",
    "old",
    "data",
    "data/src",
    "data/ro",
    "priv",
    "shared",
    "peer",
    "slave",
    "ss",
    "ss2",
    "unb",
    "work",
    "ext",
    "odd",
  ])
    mkdirSync(join(r, d));
  copyFileSync("/bin/busybox", join(r, "bin/busybox"));
  chmodSync(join(r, "bin/busybox"), 0o755);
  for (const a of [
    "sh",
    "sleep",
    "cat",
    "echo",
    "mount",
    "umount",
    "ls",
    "readlink",
    "setsid",
    "ln",
    "mkdir",
    "mknod",
    "grep",
    "unshare",
  ])
    symlinkSync("busybox", join(r, "bin", a));
  writeFileSync(join(r, "data/src/f"), "hello\n");
  return r;
}

/** The container's program: its mounts, an open file and cwd inside, a counter; on /work/go it checks itself. */
const INNER = `umount -l /old
mount -t proc proc /proc
$EXTRA
mount -t tmpfs -o size=1m,mode=1777 tmpfs /tmp
echo tmpdata > /tmp/t1; mkdir /tmp/d; echo x > /tmp/d/t2; ln -s t1 /tmp/link
mount --bind /data/src /data/ro; mount -o remount,bind,ro /data/ro
mount -t tmpfs priv /priv; mount --make-private /priv
mount -t tmpfs shr /shared; mount --make-shared /shared
mount --bind /shared /peer
mount --bind /shared /slave; mount --make-slave /slave
mount --bind /shared /ss; mount --make-slave /ss; mount --make-shared /ss
mount --bind /ss /ss2
mount -t tmpfs unb /unb; mount --make-unbindable /unb
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
$LATE
cd /work
exec 3</data/ro/f
echo $$ > /pid
i=0
while :; do
  i=$((i+1)); echo $i > /work/count
  if [ -e /work/go ]; then
    r=PASS
    read -r l <&3; [ "$l" = hello ] || r="FAIL: fd 3 read '$l'"
    [ "$(cat /tmp/t1)" = tmpdata ] || r="FAIL: /tmp/t1"
    [ "$(cat /tmp/d/t2)" = x ] || r="FAIL: /tmp/d/t2"
    [ "$(readlink /tmp/link)" = t1 ] || r="FAIL: /tmp/link"
    [ "$(readlink /proc/$$/cwd)" = /work ] || r="FAIL: cwd $(readlink /proc/$$/cwd)"
    [ "$(readlink /proc/$$/root)" = / ] || r="FAIL: root"
    (echo w > /data/ro/w) 2>/dev/null && r="FAIL: /data/ro is writable"
    mkdir -p /shared/sub /slave/own
    mount -t tmpfs prop /shared/sub && echo p > /shared/sub/f
    for d in /peer /slave /ss /ss2; do [ "$(cat $d/sub/f 2>&1)" = p ] || r="FAIL: $d did not receive the mount made on /shared/sub"; done
    mount -t tmpfs own /slave/own
    grep -q " /shared/own " /proc/self/mountinfo && r="FAIL: a mount on the slave /slave propagated to its master /shared"
    umount /slave/own; umount /shared/sub
    grep -q " /peer/sub " /proc/self/mountinfo && r="FAIL: the umount of /shared/sub did not propagate to /peer"
    (mount --bind /unb /odd) 2>/dev/null && r="FAIL: /unb is bindable"
    $CHECK
    echo "$r" > /work/result.tmp; cat /proc/self/mountinfo >> /work/result.tmp; mv /work/result.tmp /work/result
    exit 0
  fi
  sleep 0.05
done`;

/**
 * A container as runtimes make it: \`unshare -m --fork\`, the rootfs bind-mounted on itself,
 * pivot_root into it, the old root detached; INNER runs as a session leader in there.
 * \`pre\` runs before pivot_root (host paths still visible), \`extra\` inside, \`late\` once INNER's mounts are made. Returns the shell's PID.
 */
async function startContainer(
  rootfs: string,
  o: {
    pre?: string;
    extra?: string;
    late?: string;
    check?: string;
    pidns?: boolean;
    unshare?: string[];
    rslave?: boolean;
  } = {}
): Promise<{ pid: number; outer: Subprocess }> {
  const outer = Bun.spawn(
    [
      "unshare",
      "-m",
      ...(o.rslave ? ["--propagation", "unchanged"] : []),
      ...(o.pidns ? ["-p"] : []),
      ...(o.unshare ?? []),
      "--fork",
      "sh",
      "-c",
      `set -e; mount --make-${o.rslave ? "rslave" : "rprivate"} /; mount --bind "$0" "$0"; ${o.pre ? `${o.pre};` : ""} cd "$0"; pivot_root . old; exec /old/bin/busybox chroot . /bin/setsid /bin/sh -c "$1" </data/src/f >/work/out 2>&1`,
      rootfs,
      INNER.replace("$EXTRA", () => o.extra ?? "")
        .replace("$LATE", () => o.late ?? "")
        .replace("$CHECK", () => o.check ?? ""),
    ],
    { stdin: "ignore", stdout: "ignore", stderr: "ignore", detached: true }
  );
  spawned.push(outer);
  let pid = await waitFor(() => Number(read(join(rootfs, "pid"))) || undefined, "the container's shell", 10000);
  if (o.pidns) pid = childOf(outer.pid); // it is 1 in there
  containers.push(pid);
  await waitFor(() => Number(read(join(rootfs, "work/count"))) > 1, "the container's counter", 10000);
  return { pid, outer };
}

function childOf(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(" ")[0]);
}

async function counting(rootfs: string) {
  const a = Number(read(join(rootfs, "work/count")));
  await waitFor(() => Number(read(join(rootfs, "work/count"))) > a + 2, "the counter to advance", 5000);
}

/**
 * mountinfo without ids and device numbers, sorted; a peer group is named by its members'
 * mountpoints (shared:[/a,/b], master:[/a,/b]), so the groups themselves are compared, not numbers
 */
function mounts(text: string): string[] {
  const rows = text
    .split("\n")
    .filter((l) => / - /.test(l))
    .map((l) => l.split(" "));
  const groups = new Map<string, string[]>();
  for (const f of rows)
    for (const o of f.slice(6, f.indexOf("-"))) {
      const m = /^shared:(\d+)$/.exec(o);
      if (m) groups.set(m[1], [...(groups.get(m[1]) ?? []), f[4]]);
    }
  const name = (n: string) => `[${(groups.get(n) ?? ["outside"]).sort().join(",")}]`;
  return rows
    .map((f) => {
      const sep = f.indexOf("-");
      return [
        f[3],
        f[4],
        f[5],
        ...f.slice(6, sep).map((o) => o.replace(/^(shared|master):(\d+)$/, (_, k, n) => `${k}:${name(n)}`)),
        ...f.slice(sep + 1),
      ].join(" ");
    })
    .sort();
}
/**
 * crit decodes every mount-related image of the dump (the namespace's mounts, which namespace each
 * process is in, roots and cwds, open files and ttys), all at once
 */
async function critDecodesAll(dir: string) {
  const imgs = readdirSync(dir).filter((f) =>
    /^(mountpoints-\d+|inventory|ids-\d+|fs-\d+|files|tty-info|pstree)\.img$/.test(f)
  );
  expect(
    imgs
      .filter((f) => /^(mountpoints|inventory|ids|fs)/.test(f))
      .map((f) => f.replace(/-\d+/, ""))
      .sort()
  ).toEqual(expect.arrayContaining(["fs.img", "ids.img", "inventory.img", "mountpoints.img"]));
  const runs = imgs.map((f) => ({
    f,
    p: Bun.spawn(["crit", "decode", "-i", join(dir, f)], { stdout: "ignore", stderr: "pipe" }),
  }));
  for (const { f, p } of runs) {
    const code = await p.exited;
    expect(`${f}: ${code === 0 ? "decoded" : (await new Response(p.stderr).text()).trim().split("\n").pop()}`).toBe(
      `${f}: decoded`
    );
  }
}
const same = (a: string, b: string) => {
  const x = statSync(a),
    y = statSync(b);
  return x.dev === y.dev && x.ino === y.ino;
};

/**
 * a container as runc makes one: its own PID namespace (a fresh /proc), /dev a tmpfs with device
 * nodes (and mqueue), /proc/sys a read-only bind
 */
const runcLike = (mqueue = true) => ({
  pidns: true,
  extra: [
    "mount -t tmpfs -o nosuid,mode=755,size=64k dev /dev",
    "mkdir /dev/pts /dev/mqueue",
    "mknod -m 666 /dev/null c 1 3",
    "mknod -m 666 /dev/zero c 1 5",
    ...(mqueue ? ["mount -t mqueue mqueue /dev/mqueue"] : []),
    "mount --bind /proc/sys /proc/sys",
    "mount -o remount,bind,ro /proc/sys",
  ].join("\n"),
  check: `[ "$(readlink /proc/1/exe)" = /bin/busybox ] || r="FAIL: /proc is not the container's PID namespace"
    echo hi > /dev/null || r="FAIL: /dev/null"
    [ -c /dev/zero ] || r="FAIL: /dev/zero"
    (echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && r="FAIL: /proc/sys is writable"`,
});

/** criu-bun restores a tree with its own PID namespace: its init (pid 1 in there) is the restore's child */
async function restoreInit(dir: string, extra: string[] = []): Promise<{ init: number; r: Subprocess }> {
  const r = Bun.spawn([...criuBunCommand(), "restore", "-D", dir, "-o", "restore.log", "-v4", ...extra], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const logText = () => read(join(dir, "restore.log"));
  await waitFor(() => logText().includes("Restore finished") || r.exitCode !== null, "the restore", 20000);
  if (r.exitCode !== null) throw new Error((await new Response(r.stderr).text()) + logText());
  const init = childOf(r.pid);
  expect(/^NSpid:\s*\d+\s+1$/m.test(readFileSync(`/proc/${init}/status`, "utf8"))).toBe(true);
  return { init, r };
}

/** The restored container PID runs in ROOTFS and its own mount namespace, counts on, and its self-check
 *  passes with the mounts it had before the dump (whichever tool restored it). */
async function containerPasses(rootfs: string, pid: number, before: string[]) {
  expect(same(`/proc/${pid}/root`, rootfs)).toBe(true); // the process's root is the rootfs, never the host's /
  expect(readlinkSync(`/proc/${pid}/ns/mnt`)).not.toBe(readlinkSync("/proc/self/ns/mnt"));
  await counting(rootfs);
  writeFileSync(join(rootfs, "work/go"), "");
  await waitFor(() => existsSync(join(rootfs, "work/result")), "the container's result", 10000);
  const res = readFileSync(join(rootfs, "work/result"), "utf8");
  expect(res.split("\n")[0]).toBe("PASS");
  expect(mounts(res)).toEqual(before);
}

async function finish(rootfs: string, pid: number, r: { proc: Subprocess }, before: string[]) {
  await containerPasses(rootfs, pid, before);
  expect(await r.proc.exited).toBe(0);
}

/** CRIU 4.2 run with ARGS, its log LOG in DIR at -v4; a failure throws with the log's Error lines */
function criu42(args: string[], dir: string, log: string, context = "") {
  const r = Bun.spawnSync([CRIU42, ...args, "-D", dir, "-o", log, "-v4"]);
  if (r.exitCode !== 0)
    throw new Error(
      context +
        read(join(dir, log))
          .split("\n")
          .filter((l) => l.includes("Error"))
          .join("\n")
    );
}

describe("container mount namespaces", () => {
  test("pivot_root into a busybox rootfs with tmpfs, read-only bind, private and shared mounts, /proc, /dev/pts: same mounts, tmpfs contents, root, fds after restore", async () => {
    const rootfs = busyboxRootfs();
    const { pid, outer } = await startContainer(rootfs);
    const before = mounts(readFileSync(`/proc/${pid}/mountinfo`, "utf8"));
    expect(before.some((l) => / \/shared .* shared:/.test(l))).toBe(true);
    const dir = imagesDir("container");
    dump(pid, dir);
    await outer.exited; // the namespace is gone with its processes
    // crit reads the new images; CRIU's layout: mountpoints-<ns>.img, tmpfs-dev-<dev>.tar.gz.img (gzip)
    const mi = readdirSync(dir).find((f) => /^mountpoints-\d+\.img$/.test(f))!;
    const ents = JSON.parse(Bun.spawnSync(["crit", "decode", "-i", join(dir, mi)]).stdout.toString()).entries;
    expect(ents.map((e: any) => e.mountpoint).sort()).toEqual([
      "/",
      "/data/ro",
      "/dev/pts",
      "/peer",
      "/priv",
      "/proc",
      "/shared",
      "/slave",
      "/ss",
      "/ss2",
      "/tmp",
      "/unb",
    ]);
    expect(
      before.filter((l) => / \/(shared|peer|slave|ss|ss2|unb) /.test(l)).map((l) => l.split(" ").slice(1, -3).join(" "))
    ).toEqual([
      "/peer rw,relatime shared:[/peer,/shared]",
      "/shared rw,relatime shared:[/peer,/shared]",
      "/slave rw,relatime master:[/peer,/shared]",
      "/ss rw,relatime shared:[/ss,/ss2] master:[/peer,/shared]",
      "/ss2 rw,relatime shared:[/ss,/ss2] master:[/peer,/shared]",
      "/unb rw,relatime unbindable",
    ]);
    // crit's view of the peer groups: /shared and /peer one group, /slave its slave, /ss and /ss2 another with the same master
    const at = (mp: string) => ents.find((e: any) => e.mountpoint === mp);
    expect(at("/shared").shared_id).toBeGreaterThan(0);
    expect([at("/peer").shared_id, at("/slave").master_id, at("/ss").master_id, at("/ss2").master_id]).toEqual(
      Array(4).fill(at("/shared").shared_id)
    );
    expect(at("/ss2").shared_id).toBe(at("/ss").shared_id);
    expect(at("/ss").shared_id).not.toBe(at("/shared").shared_id);
    await critDecodesAll(dir);
    const tmp = ents.find((e: any) => e.mountpoint === "/tmp");
    const tarImg = join(dir, `tmpfs-dev-${tmp.root_dev}.tar.gz.img`); // crit without --pretty: the kernel's dev number
    expect(readFileSync(tarImg).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(Bun.spawnSync(["tar", "tzf", tarImg]).stdout.toString().split("\n").filter(Boolean).sort()).toEqual([
      "./",
      "./d/",
      "./d/t2",
      "./link",
      "./t1",
    ]);
    const r = await restore(dir, pid);
    await finish(rootfs, pid, r, before);
  }, 60000);

  test("restore with --root onto a copy of the rootfs; an external bind mount (--external mnt[...]) comes from another host path (--ext-mount-map)", async () => {
    const rootfs = busyboxRootfs();
    const hostA = mkdtempSync(join(tmpdir(), "criu-bun-extA-")),
      hostB = mkdtempSync(join(tmpdir(), "criu-bun-extB-"));
    tmp.push(hostA, hostB);
    writeFileSync(join(hostA, "f"), "one\n");
    writeFileSync(join(hostB, "f"), "two\n");
    const { pid, outer } = await startContainer(rootfs, { pre: `mount --bind ${hostA} "$0/ext"` });
    expect(readFileSync(`/proc/${pid}/root/ext/f`, "utf8")).toBe("one\n");
    const before = mounts(readFileSync(`/proc/${pid}/mountinfo`, "utf8"));
    // not marked external: refused, naming the mount, and the container keeps running
    const bad = criuBun(["dump", "-t", String(pid), "-D", imagesDir("ext-refused")]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim()).toMatch(
      new RegExp(
        `^Error \\(dump\\): process ${pid} mount namespace mnt:\\[\\d+\\]: mount '/ext' \\(ext4 [^)]*, bind of ${hostA}\\) cannot be recreated by criu-bun; mark it external`
      )
    );
    await counting(rootfs);
    const dir = imagesDir("container-root");
    dump(pid, dir, ["--external", "mnt[/ext]:myext"]);
    await outer.exited;
    const copy = mkdtempSync(join(tmpdir(), "criu-bun-rootfs-copy-"));
    tmp.push(copy);
    expect(Bun.spawnSync(["cp", "-a", `${rootfs}/.`, copy]).exitCode).toBe(0);
    writeFileSync(join(rootfs, "work/count"), "frozen");
    // the key must be mapped at restore
    const unmapped = criuBun(["restore", "-D", dir, "--root", copy]);
    expect(unmapped.code).not.toBe(0);
    expect(unmapped.stderr.trim()).toBe(
      "Error (restore): mount '/ext' is external (key 'myext'): map it with --external mnt[myext]:PATH or --ext-mount-map myext:PATH"
    );
    // a restore that fails while building the mounts (the copy lacks the mountpoint /priv) leaves
    // no mount and no process behind: the mounts were made in the new namespace only
    rmSync(join(copy, "priv"), { recursive: true });
    const failed = criuBun(["restore", "-D", dir, "--root", copy, "--ext-mount-map", `myext:${hostB}`]);
    expect(failed.code).not.toBe(0);
    expect(failed.stderr.trim().split("\n")).toEqual([
      `Error (restore): process ${pid}: mount tmpfs on /priv failed: ENOENT (errno 2: No such file or directory); the container's mounts are built on ${copy}`,
    ]);
    expect(
      read("/proc/self/mountinfo")
        .split("\n")
        .filter((l) => l.includes(copy) || l.includes(hostB))
    ).toEqual([]);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    mkdirSync(join(copy, "priv"));
    const r = await restore(dir, pid, ["--root", copy, "--ext-mount-map", `myext:${hostB}`]);
    expect(readFileSync(`/proc/${pid}/root/ext/f`, "utf8")).toBe("two\n");
    await finish(
      copy,
      pid,
      r,
      before.map((l) => l.replace(rootfs, copy).replace(hostA, hostB))
    );
    expect(readFileSync(join(rootfs, "work/count"), "utf8")).toBe("frozen"); // the original rootfs is left alone
  }, 60000);

  test("--ext-mount-map auto: a bind from the host is saved keyed by where it is visible here, and bound from there again at restore", async () => {
    const rootfs = busyboxRootfs();
    const host = mkdtempSync(join(tmpdir(), "criu-bun-extauto-"));
    tmp.push(host);
    writeFileSync(join(host, "f"), "auto\n");
    const { pid, outer } = await startContainer(rootfs, {
      pre: `mount --bind ${host} "$0/ext"; mount -o remount,bind,ro "$0/ext"`,
      check: `[ "$(cat /ext/f)" = auto ] || r="FAIL: /ext/f"`,
    });
    const before = mounts(readFileSync(`/proc/${pid}/mountinfo`, "utf8"));
    const dir = imagesDir("container-extauto");
    dump(pid, dir, ["--ext-mount-map", "auto"]);
    await outer.exited;
    const ents = JSON.parse(
      Bun.spawnSync([
        "crit",
        "decode",
        "-i",
        join(dir, readdirSync(dir).find((f) => f.startsWith("mountpoints-"))!),
      ]).stdout.toString()
    ).entries;
    expect(ents.filter((e: any) => e.ext_key).map((e: any) => [e.mountpoint, e.ext_key])).toEqual([["/ext", host]]);
    const r = await restore(dir, pid, ["--ext-mount-map", "auto"]);
    await finish(rootfs, pid, r, before);
  }, 60000);

  test("with its own PID namespace (fresh /proc inside), /dev a tmpfs with device nodes and mqueue, /proc/sys a read-only bind of its proc, as runc makes them", async () => {
    const rootfs = busyboxRootfs();
    const { pid, outer } = await startContainer(rootfs, runcLike());
    expect(read(join(rootfs, "pid")).trim()).toBe("1");
    const before = mounts(readFileSync(`/proc/${pid}/mountinfo`, "utf8"));
    expect(before.filter((l) => / \/proc\/sys /.test(l))).toHaveLength(1);
    const dir = imagesDir("container-pidns");
    dump(pid, dir);
    await outer.exited;
    const { init, r } = await restoreInit(dir);
    await finish(rootfs, init, { proc: r }, before);
  }, 60000);

  // (without mqueue: CRIU dumps an mqueue mount only when its IPC namespace has no queue, and a
  // container's own IPC namespace needs ipcns-var.img, which criu-bun does not write yet)
  test("CRIU 4.2 restores criu-bun's images of a container with its own PID namespace, /dev a tmpfs, a read-only /proc/sys; criu-bun restores CRIU 4.2's", async () => {
    // criu-bun dumps, CRIU 4.2 restores (-d: the init is nobody's child here; --pidfile says which it is)
    const a = busyboxRootfs();
    const ca = await startContainer(a, runcLike(false));
    const beforeA = mounts(readFileSync(`/proc/${ca.pid}/mountinfo`, "utf8"));
    const da = imagesDir("pidns-to-criu");
    dump(ca.pid, da);
    await ca.outer.exited;
    const pidfile = join(da, "restored.pid");
    criu42(["restore", "-d", "--root", a, "--pidfile", pidfile], da, "criu-restore.log");
    const initA = Number(read(pidfile));
    containers.push(initA);
    expect(/^NSpid:\s*\d+\s+1$/m.test(readFileSync(`/proc/${initA}/status`, "utf8"))).toBe(true);
    await containerPasses(a, initA, beforeA);
    // CRIU 4.2 dumps, criu-bun restores
    const b = busyboxRootfs();
    const cb = await startContainer(b, runcLike(false));
    const beforeB = mounts(readFileSync(`/proc/${cb.pid}/mountinfo`, "utf8"));
    const db = imagesDir("pidns-from-criu");
    criu42(["dump", "-t", String(cb.pid)], db, "criu-dump.log");
    await cb.outer.exited;
    const { init, r } = await restoreInit(db, ["--root", b]);
    await finish(b, init, { proc: r }, beforeB);
  }, 90000);

  test("tmpfs images: GNU tar extracts criu-bun's; criu-bun restores one GNU tar wrote as CRIU 4.2 writes them (long names, links, fifo, modes)", async () => {
    const rootfs = busyboxRootfs();
    const { pid, outer } = await startContainer(rootfs);
    const before = mounts(readFileSync(`/proc/${pid}/mountinfo`, "utf8"));
    const dir = imagesDir("container-tar");
    dump(pid, dir);
    await outer.exited;
    const ents = JSON.parse(
      Bun.spawnSync([
        "crit",
        "decode",
        "-i",
        join(dir, readdirSync(dir).find((f) => f.startsWith("mountpoints-"))!),
      ]).stdout.toString()
    ).entries;
    const img = join(dir, `tmpfs-dev-${ents.find((e: any) => e.mountpoint === "/tmp").root_dev}.tar.gz.img`);
    // GNU tar reads what criu-bun wrote (CRIU 4.2 restores tmpfs with tar --extract --gzip)
    const out = mkdtempSync(join(tmpdir(), "criu-bun-tarx-"));
    tmp.push(out);
    expect(
      Bun.spawnSync([
        "tar",
        "--extract",
        "--gzip",
        "--no-unquote",
        "--no-wildcards",
        "--numeric-owner",
        "-f",
        img,
        "-C",
        out,
      ]).exitCode
    ).toBe(0);
    expect(readFileSync(join(out, "t1"), "utf8")).toBe("tmpdata\n");
    expect(readFileSync(join(out, "d/t2"), "utf8")).toBe("x\n");
    expect(readlinkSync(join(out, "link"))).toBe("t1");
    expect(statSync(out).mode & 0o7777).toBe(0o1777);
    // and criu-bun restores a tmpfs image made by GNU tar the way CRIU 4.2 makes it
    const src = mkdtempSync(join(tmpdir(), "criu-bun-tarc-"));
    tmp.push(src);
    const long = "d".repeat(60) + "/" + "e".repeat(60);
    mkdirSync(join(src, "d"), { mode: 0o750 });
    mkdirSync(join(src, long), { recursive: true });
    writeFileSync(join(src, "t1"), "tmpdata\n");
    writeFileSync(join(src, "d/t2"), "x\n");
    symlinkSync("t1", join(src, "link"));
    writeFileSync(join(src, long, "f".repeat(90)), "long\n");
    Bun.spawnSync(["ln", join(src, "t1"), join(src, "hard")]);
    Bun.spawnSync(["mkfifo", "-m", "640", join(src, "fifo")]);
    chmodSync(src, 0o1777);
    chmodSync(join(src, "d"), 0o750);
    const t = Bun.spawnSync([
      "tar",
      "--create",
      "--gzip",
      "--no-unquote",
      "--no-wildcards",
      "--one-file-system",
      "--check-links",
      "--preserve-permissions",
      "--sparse",
      "--numeric-owner",
      "--directory",
      src,
      "-f",
      img,
      ".",
    ]);
    expect(t.exitCode).toBe(0);
    // the image was replaced on purpose: its line in criu-bun.sum follows (the sums catch damage, not intent)
    const sum = join(dir, "criu-bun.sum"),
      name = img.slice(dir.length + 1);
    const line = `${Bun.hash.xxHash64(readFileSync(img)).toString(16).padStart(16, "0")}  ${name}`;
    writeFileSync(
      sum,
      readFileSync(sum, "latin1")
        .split("\n")
        .map((l) => (l.endsWith(`  ${name}`) ? line : l))
        .join("\n")
    );
    const r = await restore(dir, pid);
    const root = `/proc/${pid}/root/tmp`;
    expect(readFileSync(join(root, long, "f".repeat(90)), "utf8")).toBe("long\n");
    expect(statSync(join(root, "hard")).ino).toBe(statSync(join(root, "t1")).ino);
    expect(statSync(join(root, "fifo")).isFIFO()).toBe(true);
    expect(statSync(join(root, "fifo")).mode & 0o777).toBe(0o640);
    expect(statSync(join(root, "d")).mode & 0o777).toBe(0o750);
    await finish(rootfs, pid, r, before);
  }, 60000);

  // The PIDs to wait for are those of the dumped tree as its pstree.img says: the shell's child
  // changes every 50 ms, and an orphaned child the dump killed lingers as a zombie of an init that
  // reaps late, still holding the session and group ids CRIU's clone3 asks for (EEXIST)
  test("CRIU 4.2 restores criu-bun's images of the container, and criu-bun restores CRIU 4.2's", async () => {
    // criu-bun dumps, CRIU 4.2 restores (it needs --root for a mount namespace)
    const a = busyboxRootfs();
    const ca = await startContainer(a);
    const beforeA = mounts(readFileSync(`/proc/${ca.pid}/mountinfo`, "utf8"));
    const da = imagesDir("container-to-criu");
    dump(ca.pid, da);
    const treeA = dumpedPids(da);
    await ca.outer.exited;
    // CRIU needs every PID of the tree free: wait until the killed processes are reaped (orphans by init)
    await waitFor(() => treeA.every((p) => !existsSync(`/proc/${p}`)), "the dumped tree to be reaped", 20000);
    criu42(["restore", "-d", "--root", a], da, "criu-restore.log", `tree ${treeA.join(",")}\n`);
    await containerPasses(a, ca.pid, beforeA);
    // CRIU 4.2 dumps, criu-bun restores
    const b = busyboxRootfs();
    const cb = await startContainer(b);
    const beforeB = mounts(readFileSync(`/proc/${cb.pid}/mountinfo`, "utf8"));
    const db = imagesDir("container-from-criu");
    criu42(["dump", "-t", String(cb.pid)], db, "criu-dump.log");
    await cb.outer.exited;
    const treeB = dumpedPids(db);
    await waitFor(() => treeB.every((p) => !existsSync(`/proc/${p}`)), "the tree CRIU dumped to be reaped", 20000);
    expect(readdirSync(db).some((f) => /^tmpfs-dev-\d+\.tar\.gz\.img$/.test(f))).toBe(true);
    const r = await restore(db, cb.pid, ["--root", b]);
    await finish(b, cb.pid, r, beforeB);
  }, 90000);

  test("refused at dump naming the mount, the container running on: mounts criu-bun cannot make (ramfs, an overlay the container mounted); peers binding two directories of a mount no longer mounted whole (no member holds the others' roots); a root that is the slave of a group outside", async () => {
    const cases = [
      {
        extra: "mount -t ramfs ramfs /odd",
        line: `mount '/odd' \\(ramfs ramfs\\) cannot be recreated by criu-bun; mark it external`,
      },
      {
        extra: "mount -t overlay -o lowerdir=/data/src:/bin ovl /odd",
        line: `mount '/odd' \\(overlay ovl\\) cannot be recreated by criu-bun; mark it external`,
      },
      {
        extra:
          "mkdir /data/x /data/y; mount --bind /data /data; mount --make-shared /data; mount --bind /data/x /ext; mount --bind /data/y /odd; umount /data",
        line: `mount '/(ext|odd)' \\(\\S+ [^,]*, bind of /\\S+/data/[xy]\\) is a peer \\(group \\d+\\) of '/(ext|odd)', whose root '/\\S+/data/[xy]' does not hold its root '/\\S+/data/[xy]'; not supported`,
      },
      // the root a slave of a peer group outside (runc's rslave rootfs on a host whose / is shared):
      // the rootfs is a shared mount here, the container's namespace a copy made rslave
      {
        rslave: true,
        line: `mount '/' \\(\\S+ [^,]*, bind of /\\S+\\) is a slave of a peer group outside its namespace \\(master \\d+\\); not supported`,
      },
    ];
    for (const c of cases as { extra?: string; rslave?: boolean; line: string }[]) {
      const rootfs = busyboxRootfs();
      if (c.rslave) {
        hostMount(["--bind", rootfs, rootfs]);
        expect(Bun.spawnSync(["mount", "--make-shared", rootfs]).exitCode).toBe(0);
      }
      const { pid, outer } = await startContainer(rootfs, { extra: c.extra, rslave: c.rslave });
      const r = criuBun(["dump", "-t", String(pid), "-D", imagesDir("mnt-refused")]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split("\n")).toEqual([
        expect.stringMatching(
          new RegExp(`^Error \\(dump\\): process ${pid} mount namespace mnt:\\[\\d+\\]: ${c.line}`)
        ),
      ]);
      await counting(rootfs);
      process.kill(-outer.pid, "SIGKILL");
      await outer.exited;
      if (c.rslave) {
        process.kill(pid, "SIGKILL");
        await waitFor(() => !existsSync(`/proc/${pid}`), "the container to end", 10000);
        hostUmount(rootfs);
      }
    }
  }, 30000);

  test("a pty pair held in the container's own devpts (newinstance): same index, the slave on that devpts, raw mode and window size, bytes both ways", async () => {
    const rootfs = busyboxRootfs();
    const cc = Bun.spawnSync(
      ["gcc", "-static", "-O2", "-o", join(rootfs, "bin/ptyns"), join(import.meta.dir, "workloads/ptyns.c")],
      { stderr: "pipe" }
    );
    if (cc.exitCode !== 0) throw new Error(`gcc -static ptyns.c: ${cc.stderr}`);
    const check = `while [ ! -e /work/pty-result ]; do sleep 0.05; done
    [ "$(cat /work/pty-result)" = PASS ] || r="pty $(cat /work/pty-result)"`;
    const { pid, outer } = await startContainer(rootfs, { late: "mknod -m 666 /dev/null c 1 3; /bin/ptyns &", check });
    const index = await waitFor(() => read(join(rootfs, "work/pty-index")).trim(), "the pty pair", 10000);
    const before = mounts(readFileSync(`/proc/${pid}/mountinfo`, "utf8"));
    const dir = imagesDir("container-pty");
    dump(pid, dir);
    await outer.exited;
    await critDecodesAll(dir);
    const infos = JSON.parse(
      Bun.spawnSync(["crit", "decode", "-i", join(dir, "tty-info.img")]).stdout.toString()
    ).entries;
    expect(infos.map((i: any) => i.pty.index)).toEqual([Number(index), Number(index)]);
    const r = await restore(dir, pid);
    await finish(rootfs, pid, r, before);
  }, 60000);

  test("an overlayfs root as Podman makes it: restored onto the overlay mounted again (--root), same mounts; without --root, refused in one line once the overlay is gone", async () => {
    const lower = busyboxRootfs();
    const base = mkdtempSync(join(tmpdir(), "criu-bun-ovl-"));
    tmp.push(base);
    const rw = join(base, "rw"),
      merged = join(base, "merged");
    mkdirSync(rw);
    mkdirSync(merged);
    // upper and work on a tmpfs of their own (an overlay's upper layer cannot be on an overlay)
    hostMount(["-t", "tmpfs", "criu-bun-ovl", rw]);
    mkdirSync(join(rw, "up"));
    mkdirSync(join(rw, "work"));
    // uuid=on said, not left to the default (auto), which shows uuid=on only while the layers are new
    const overlay = () =>
      hostMount([
        "-t",
        "overlay",
        "-o",
        `lowerdir=${lower},upperdir=${rw}/up,workdir=${rw}/work,uuid=on`,
        "criu-bun-ovl",
        merged,
      ]);
    overlay();
    const { pid, outer } = await startContainer(merged);
    const before = mounts(readFileSync(`/proc/${pid}/mountinfo`, "utf8"));
    expect(before.filter((l) => l.startsWith("/ / "))).toEqual([
      expect.stringMatching(/ overlay criu-bun-ovl rw,lowerdir=/),
    ]);
    const dir = imagesDir("container-overlay");
    dump(pid, dir);
    await outer.exited;
    const ents = JSON.parse(
      Bun.spawnSync([
        "crit",
        "decode",
        "-i",
        join(dir, readdirSync(dir).find((f) => f.startsWith("mountpoints-"))!),
      ]).stdout.toString()
    ).entries;
    expect(ents.find((e: any) => e.mountpoint === "/").fstype).toBe(17); // OVERLAYFS
    await waitFor(() => dumpedPids(dir).every((p) => !existsSync(`/proc/${p}`)), "the dumped tree to be reaped", 20000);
    // the runtime takes the overlay down after the checkpoint and mounts it again to restore
    hostUmount(merged);
    const gone = criuBun(["restore", "-D", dir]);
    expect(gone.code).not.toBe(0);
    expect(gone.stderr.trim()).toMatch(
      /^Error \(restore\): the container's root file system \(\/ on \d+:\d+\) is not visible here; give it with --root DIR$/
    );
    overlay();
    const r = await restore(dir, pid, ["--root", merged]);
    await finish(merged, pid, r, before);
    hostUmount(merged);
    hostUmount(rw);
  }, 60000);

  test("refused at dump in one line, the container running on: a process in a mount namespace of its own inside the container's; a container in a cgroup namespace of its own", async () => {
    const rootfs = busyboxRootfs();
    const { pid, outer } = await startContainer(rootfs, {
      extra: "mknod -m 666 /dev/null c 1 3; unshare -m sh -c 'echo $$ > /nested; exec sleep 1000' &",
    });
    const nested = await waitFor(
      () => Number(read(join(rootfs, "nested"))) || undefined,
      "the nested namespace's shell",
      10000
    ).catch((e) => {
      throw new Error(e.message + read(join(rootfs, "work/out")));
    });
    const ns = (p: number, k: string) => readlinkSync(`/proc/${p}/ns/${k}`);
    expect(ns(nested, "mnt")).not.toBe(ns(pid, "mnt"));
    const r = criuBun(["dump", "-t", String(pid), "-D", imagesDir("mnt-nested")]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toEqual([
      `Error (dump): process ${nested} is in a mnt namespace of its own (${ns(nested, "mnt")}, the tree's root is in ${ns(pid, "mnt")}); nested mnt namespaces are not supported yet`,
    ]);
    await counting(rootfs);
    process.kill(-outer.pid, "SIGKILL");
    await outer.exited;

    const rootfs2 = busyboxRootfs();
    const c = await startContainer(rootfs2, { unshare: ["-C"] });
    expect(ns(c.pid, "cgroup")).not.toBe(readlinkSync("/proc/self/ns/cgroup"));
    const rc = criuBun(["dump", "-t", String(c.pid), "-D", imagesDir("cgroupns")]);
    expect(rc.code).not.toBe(0);
    expect(rc.stderr.trim().split("\n")).toEqual([
      `Error (dump): process ${c.pid}: cgroup namespace of its own (${ns(c.pid, "cgroup")}) is not supported yet`,
    ]);
    await counting(rootfs2);
    process.kill(-c.outer.pid, "SIGKILL");
    await c.outer.exited;
  }, 30000);
});

describe("mount namespaces", () => {
  test("a copy of criu-bun's mounts plus one of its own is saved mount by mount, refused naming a mount it cannot make; a chroot is refused", async () => {
    const w = await startWorkload("counter", [], {
      wrap: ["unshare", "-m", "sh", "-c", 'mount -t tmpfs criu-bun-extra /mnt; exec "$0" "$@"'],
    });
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("mntns-extra")]);
    expect(r.code).not.toBe(0);
    // not a copy of criu-bun's mounts: saved mount by mount, and the host's devtmpfs (or another mount it cannot make) is refused by name
    expect(r.stderr.trim()).toMatch(
      new RegExp(
        `^Error \\(dump\\): process ${w.pid} mount namespace mnt:\\[\\d+\\]: mount '/[^']*' \\([^)]*\\) [^\\n]*$`
      )
    );
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");

    const rootfs = busyboxRootfs();
    const sh = Bun.spawn(["chroot", rootfs, "/bin/sh", "-c", "echo $$ > /pid; exec sleep 1000"], {
      stdin: "ignore",
      stdout: "ignore",
      stderr: "ignore",
      detached: true,
    });
    spawned.push(sh);
    const pid = await waitFor(() => Number(read(join(rootfs, "pid"))) || undefined, "the chrooted shell", 10000);
    const rc = criuBun(["dump", "-t", String(pid), "-D", imagesDir("chroot")]);
    expect(rc.code).not.toBe(0);
    expect(rc.stderr.trim()).toBe(
      `Error (dump): process ${pid}: root directory other than criu-bun's (chroot to ${rootfs}) is not supported yet`
    );
    expect(existsSync(`/proc/${pid}`)).toBe(true);
    sh.kill(9);
  }, 30000);

  test("a private copy of criu-bun's mounts (unshare -m) comes back in a new mount namespace, not criu-bun's", async () => {
    const w = await startWorkload("counter", [], { wrap: ["unshare", "-m", "--"] });
    const mnt = (p: number) => readlinkSync(`/proc/${p}/ns/mnt`);
    expect(mnt(w.pid)).not.toBe(mnt(process.pid));
    const dir = imagesDir("mntns-copy");
    dump(w.pid, dir);
    const table = (p: number | string) =>
      readFileSync(`/proc/${p}/mountinfo`, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => {
          const f = l.split(" ");
          return [...f.slice(2, 6), ...f.slice(f.indexOf("-"))].join(" ");
        })
        .sort();
    // criu-bun's mounts as they were before and after the restore copied them (other programs on
    // this machine may mount or umount meanwhile: network namespaces under /run/netns, tmpfs under
    // /tmp, which are left out)
    const stable = (l: string) => !/ \/(run\/netns|tmp)\/\S+ /.test(l);
    const t0 = table("self").filter(stable);
    const r = await restore(dir, w.pid);
    const t1 = table("self").filter(stable);
    expect(mnt(w.pid)).not.toBe(mnt(process.pid));
    const got = table(w.pid).filter(stable);
    expect(got).toEqual(JSON.stringify(got) === JSON.stringify(t0) ? t0 : t1);
    const lines = readFileSync(`/proc/${w.pid}/mountinfo`, "utf8").split("\n").filter(Boolean);
    expect(lines.filter((l) => / (shared|master):/.test(l))).toEqual([]); // all private, as dumped
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  }, 30000);
});
