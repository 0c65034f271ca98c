// Podman (4.3, with runc as its OCI runtime) checkpoints and restores a container through criu-bun:
// criu-bun is installed as `criu` (install --as-criu) in a directory first in PATH, where Podman's
// version check and runc both look criu up. A busybox container whose shell checks its own state
// (the counter in a variable against the one it wrote into /dev/shm, which Podman saves and
// restores itself) is checkpointed and restored in place, then checkpointed with --export, removed,
// and restored with --import under a new name. --print-stats shows the statistics criu-bun wrote
// (stats-dump / stats-restore in the work dir, as criu writes them): the test decodes the same
// files with Debian's crit and checks them against the images. A container in a network namespace
// of the test's (--network ns:/run/netns/X) is dumped with that namespace external (runc's
// net[INODE]:extRootNetNS) and restored into the same one. --pre-checkpoint then --with-previous:
// Podman asks mem_track (FEATURE_CHECK) first, and the final dump stores only what changed.
//
// Podman runs with a private storage root, run root, tmp dir (file locks, not the shared memory
// lock segment), network config dir and cgroup parent, all made here and removed after, with the
// image imported from a tar of a busybox rootfs (no registry). Without systemd: cgroupfs.
import { afterAll, expect, test } from "bun:test";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  rmdirSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { criuBun, REPO_ROOT, waitUntil } from "./harness";

const podman = Bun.which("podman");
const runc = Bun.which("runc");
const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
const built = existsSync(join(REPO_ROOT, "criu-bun"));
const crit = Bun.which("crit");
const ready = !!(podman && runc && busybox && built && crit);

const tmp = mkdtempSync(join(tmpdir(), "criu-bun-podman-"));
const tag = `criu-bun-${process.pid}`;
const cgParent = `/criu-bun-podman-${process.pid}`;
const image = `localhost/${tag}:busybox`;
// what Podman would leave outside our own directories the first time it runs on a machine
const hostLeftovers = ["/var/lib/containers", "/etc/cni/net.d/cni.lock"].filter((p) => !existsSync(p));

const env = {
  ...process.env,
  PATH: `${join(tmp, "bin")}:${process.env.PATH}`,
  CONTAINERS_CONF: join(tmp, "containers.conf"),
} as Record<string, string>;
const base = ["--root", join(tmp, "root"), "--runroot", join(tmp, "runroot"), "--storage-driver", "vfs"];

function pm(args: string[], timeout = 90000) {
  const r = Bun.spawnSync(["podman", ...base, ...args], { env, stdout: "pipe", stderr: "pipe", timeout });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}
function pmOk(args: string[]) {
  const r = pm(args);
  if (r.code !== 0) throw new Error(`podman ${args.join(" ")}: exit ${r.code}: ${r.err}`);
  return r.out;
}

const netnses: string[] = [];
afterAll(() => {
  if (!ready) {
    rmSync(tmp, { recursive: true, force: true });
    return;
  }
  pm(["rm", "-a", "-f", "-t", "0"]);
  for (const ns of netnses) Bun.spawnSync(["ip", "netns", "del", ns], { stderr: "ignore" });
  pm(["rmi", "-a", "-f"]);
  // nothing of ours stays mounted (Podman unmounts each container's shm and rootfs when it is removed)
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((m) => m?.startsWith(tmp));
  for (const m of mounts.reverse()) Bun.spawnSync(["umount", "-l", m]);
  rmSync(tmp, { recursive: true, force: true });
  // the cgroup parent given to every container, and conmon's beside them
  for (const ctrl of readdirSync("/sys/fs/cgroup")) {
    const p = join("/sys/fs/cgroup", ctrl, cgParent);
    if (!existsSync(p)) continue;
    for (const d of readdirSync(p, { withFileTypes: true }))
      if (d.isDirectory()) {
        try {
          rmdirSync(join(p, d.name));
        } catch {}
      }
    try {
      rmdirSync(p);
    } catch {}
  }
  for (const p of hostLeftovers) rmSync(p, { recursive: true, force: true });
});

/** Podman's settings for this test: everything it keeps under tmp, no systemd, file locks */
function setup() {
  mkdirSync(join(tmp, "bin"));
  const r = criuBun(["install", "--as-criu", "--prefix", join(tmp, "bin")]);
  expect(r.code).toBe(0);
  writeFileSync(
    join(tmp, "containers.conf"),
    [
      "[engine]",
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      `events_logfile_path = "${join(tmp, "events.log")}"`,
      'lock_type = "file"',
      `tmp_dir = "${join(tmp, "libpod")}"`,
      `volume_path = "${join(tmp, "volumes")}"`,
      'runtime = "runc"',
      "[network]",
      `network_config_dir = "${join(tmp, "net")}"`,
      "",
    ].join("\n")
  );
  // the image: a tar of a busybox rootfs
  const rfs = join(tmp, "rootfs");
  for (const d of ["bin", "tmp"]) mkdirSync(join(rfs, d), { recursive: true });
  cpSync(busybox!, join(rfs, "bin/busybox"));
  for (const a of ["sh", "sleep", "cat"]) symlinkSync("busybox", join(rfs, "bin", a));
  expect(Bun.spawnSync(["tar", "-C", rfs, "-cf", join(tmp, "rootfs.tar"), "."]).exitCode).toBe(0);
  pmOk(["import", "-q", join(tmp, "rootfs.tar"), image]);
}

/**
 * The self-checking counter (as in runc.test.ts): i lives in the shell, /dev/shm/count holds the
 * last value written; a mismatch (lost shell state, lost /dev/shm, a restarted shell) prints BAD.
 */
const COUNTER =
  "i=0; while :; do i=$((i+1)); read c < /dev/shm/count || c=0; " +
  'if [ "$c" != "$((i-1))" ]; then echo "BAD $c $i"; fi; echo $i > /dev/shm/count; echo $i > /tmp/count; echo "tick $i"; sleep 0.05; done';

function inspect(name: string): any {
  const r = pm(["inspect", "--type", "container", name]);
  return r.code === 0 ? JSON.parse(r.out)[0] : undefined;
}
/** the container's stdout as conmon logs it (k8s-file: "TIME stdout F LINE") */
function logText(name: string): string {
  const c = inspect(name);
  const p = c?.HostConfig?.LogConfig?.Path || join(tmp, "root/vfs-containers", c.Id, "userdata/ctr.log");
  try {
    return readFileSync(p, "utf8")
      .split("\n")
      .map((l) => l.split(" ").slice(3).join(" "))
      .join("\n");
  } catch {
    return "";
  }
}
const ticks = (s: string) => [...s.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));

/** stats-dump / stats-restore decoded by crit: the file criu-bun wrote, read by CRIU's own tool */
function critStats(file: string): Record<string, number> {
  const r = Bun.spawnSync(["crit", "decode", "-i", file], { stdout: "pipe", stderr: "pipe" });
  expect(r.stderr.toString()).toBe("");
  const e = JSON.parse(r.stdout.toString()).entries[0];
  return Object.fromEntries(Object.entries(e.dump ?? e.restore).map(([k, v]) => [k, Number(v)]));
}
/** --print-stats' statistics of the one container: what Podman read from criu-bun's files */
function printed(out: string): Record<string, number> {
  const j = JSON.parse(out);
  expect(j.container_statistics).toHaveLength(1);
  return j.container_statistics[0].criu_statistics;
}
/** Podman shows only the non-zero fields of criu's statistics */
const nonZero = (s: Record<string, number>) => Object.fromEntries(Object.entries(s).filter(([, v]) => v));
const pagesBytes = (dir: string) =>
  readdirSync(dir)
    .filter((f) => /^pages-\d+\.img$/.test(f))
    .reduce((n, f) => n + statSync(join(dir, f)).size, 0);

test.skipIf(!ready)(
  "podman container checkpoint / restore (--print-stats), then --export / rm / restore --import under a new name: the shell carries on, its /dev/shm too; the stats are criu-bun's",
  async () => {
    setup();
    const name = `${tag}-a`,
      name2 = `${tag}-b`;
    pmOk([
      "run",
      "-d",
      "--name",
      name,
      "--network",
      "none",
      "--cgroup-parent",
      cgParent,
      "--ulimit",
      "nofile=1024:1024",
      "--ulimit",
      "nproc=1024:1024",
      image,
      "sh",
      "-c",
      COUNTER,
    ]);
    await waitUntil("the container to count", () => ticks(logText(name)).length >= 5, 20000);
    const c0 = inspect(name);
    const pid0 = c0.State.Pid;
    const userdata = join(tmp, "root/vfs-containers", c0.Id, "userdata");

    // Podman asked criu-bun's version (>= 3.11) and runc ran it as criu
    const ck = pm(["container", "checkpoint", "--keep", "--print-stats", name]);
    expect(`${ck.code} ${ck.err}`, readLog(userdata, "dump.log")).toBe("0 ");
    const c1 = inspect(name);
    expect(c1.State.Status).toBe("exited");
    expect(c1.State.Checkpointed).toBe(true);
    const n = ticks(logText(name)).at(-1)!;
    // the statistics Podman printed are those in the stats-dump criu-bun wrote into the work dir
    // (the container's userdata, beside the images in checkpoint/), which crit decodes the same
    const sd = critStats(join(userdata, "stats-dump"));
    expect(printed(ck.out)).toEqual(
      nonZero({
        freezing_time: sd.freezing_time,
        frozen_time: sd.frozen_time,
        memdump_time: sd.memdump_time,
        memwrite_time: sd.memwrite_time,
        pages_scanned: sd.pages_scanned,
        pages_written: sd.pages_written,
      })
    );
    expect(sd.pages_written).toBeGreaterThan(0);
    expect(sd.pages_scanned).toBeGreaterThanOrEqual(sd.pages_written);
    expect(sd.frozen_time).toBeGreaterThan(0);
    // pages written: what the images hold
    expect(sd.pages_written * 4096).toBe(pagesBytes(join(userdata, "checkpoint")));
    expect(existsSync(join(userdata, "checkpoint/criu-bun.sum"))).toBe(true);
    expect(readFileSync(join(userdata, "dump.log"), "utf8")).toContain("Dumping finished successfully");

    const rs = pm(["container", "restore", "--keep", "--print-stats", name]);
    expect(`${rs.code} ${rs.err}`, readLog(userdata, "restore.log")).toBe("0 ");
    const sr = critStats(join(userdata, "stats-restore"));
    expect(printed(rs.out)).toEqual(
      nonZero({ forking_time: sr.forking_time, restore_time: sr.restore_time, pages_restored: sr.pages_restored })
    );
    expect(sr.pages_restored).toBe(sd.pages_written);
    expect(sr.restore_time).toBeGreaterThan(0);
    const c2 = inspect(name);
    expect(c2.State.Status).toBe("running");
    expect(c2.State.Pid).not.toBe(pid0);
    await waitUntil("the restored counter", () => ticks(logText(name)).filter((t) => t > n).length >= 5, 20000);
    // one unbroken count: before the checkpoint 1..n, after the restore n+1.. in the same log
    const all = ticks(logText(name));
    expect(all.slice(0, n + 5)).toEqual(Array.from({ length: n + 5 }, (_, i) => i + 1));
    expect(logText(name)).not.toContain("BAD");
    // podman exec joins the restored container: its /dev/shm and its rootfs
    expect(Number(pmOk(["exec", name, "cat", "/dev/shm/count"]).trim())).toBeGreaterThan(n);
    const mnt = pmOk(["mount", name]).trim();
    expect(statSync(`/proc/${c2.State.Pid}/root/tmp/count`).ino).toBe(statSync(join(mnt, "tmp/count")).ino);
    pm(["umount", name]);

    // --export: the images, criu-bun's stats-dump and Podman's own files in one tarball
    const tarball = join(tmp, "checkpoint.tar.gz");
    const ex = pm(["container", "checkpoint", "--export", tarball, "--compress", "gzip", "--print-stats", name]);
    expect(`${ex.code} ${ex.err}`, readLog(userdata, "dump.log")).toBe("0 ");
    const m = ticks(logText(name)).at(-1)!;
    expect(m).toBeGreaterThan(n + 5);
    const list = Bun.spawnSync(["tar", "-tzf", tarball], { stdout: "pipe" }).stdout.toString().split("\n");
    for (const f of [
      "stats-dump",
      "checkpoint/inventory.img",
      "checkpoint/pstree.img",
      "checkpoint/criu-bun.sum",
      "spec.dump",
      "config.dump",
    ])
      expect(list).toContain(f);
    const xdir = join(tmp, "x");
    mkdirSync(xdir);
    expect(Bun.spawnSync(["tar", "-xzf", tarball, "-C", xdir, "stats-dump"]).exitCode).toBe(0);
    const xs = critStats(join(xdir, "stats-dump"));
    expect(printed(ex.out)).toEqual(
      nonZero({
        freezing_time: xs.freezing_time,
        frozen_time: xs.frozen_time,
        memdump_time: xs.memdump_time,
        memwrite_time: xs.memwrite_time,
        pages_scanned: xs.pages_scanned,
        pages_written: xs.pages_written,
      })
    );

    // the container goes; the tarball brings it back under a new name
    pmOk(["rm", "-f", "-t", "0", name]);
    expect(inspect(name)).toBeUndefined();
    const im = pm(["container", "restore", "--import", tarball, "--name", name2, "--print-stats"]);
    const c3 = inspect(name2);
    expect(
      `${im.code} ${im.err}`,
      c3 ? readLog(join(tmp, "root/vfs-containers", c3.Id, "userdata"), "restore.log") : ""
    ).toBe("0 ");
    expect(c3.State.Status).toBe("running");
    expect(printed(im.out).pages_restored).toBe(xs.pages_written);
    await waitUntil("the imported counter", () => ticks(logText(name2)).filter((t) => t > m).length >= 5, 20000);
    expect(
      ticks(logText(name2))
        .filter((t) => t > m)
        .slice(0, 5)
    ).toEqual([m + 1, m + 2, m + 3, m + 4, m + 5]);
    expect(logText(name2)).not.toContain("BAD");
    expect(Number(pmOk(["exec", name2, "cat", "/dev/shm/count"]).trim())).toBeGreaterThan(m);
    pmOk(["rm", "-f", "-t", "0", name2]);
  },
  110000
);

test.skipIf(!ready || !Bun.which("ip"))(
  "podman run --network ns:/run/netns/X, checkpoint --pre-checkpoint, then --with-previous (mem_track), restore: the namespace is external (net[...]) and joined again, the final dump leaves unchanged pages to the pre-dump",
  async () => {
    if (!existsSync(join(tmp, "bin/criu"))) setup();
    const ns = `cbp-${process.pid % 100000}`;
    Bun.spawnSync(["ip", "netns", "del", ns], { stderr: "ignore" });
    expect(Bun.spawnSync(["ip", "netns", "add", ns]).exitCode).toBe(0);
    netnses.push(ns);
    const nsIno = statSync(`/run/netns/${ns}`).ino;
    const name = `${tag}-n`;
    pmOk([
      "run",
      "-d",
      "--name",
      name,
      "--network",
      `ns:/run/netns/${ns}`,
      "--cgroup-parent",
      cgParent,
      "--ulimit",
      "nofile=1024:1024",
      "--ulimit",
      "nproc=1024:1024",
      image,
      "sh",
      "-c",
      COUNTER,
    ]);
    await waitUntil("the container to count", () => ticks(logText(name)).length >= 5, 20000);
    const c0 = inspect(name);
    expect(statSync(`/proc/${c0.State.Pid}/ns/net`).ino).toBe(nsIno);
    const userdata = join(tmp, "root/vfs-containers", c0.Id, "userdata");
    // Podman pre-checkpoints only when the FEATURE_CHECK answer says mem_track
    const pre = pm(["container", "checkpoint", "--pre-checkpoint", "--keep", name]);
    expect(
      `${pre.code} ${pre.err}`,
      readLog(join(userdata, "pre-checkpoint"), "dump.log") + readLog(userdata, "dump.log")
    ).toBe("0 ");
    expect(inspect(name).State.Status).toBe("running");
    expect(existsSync(join(userdata, "pre-checkpoint/pstree.img"))).toBe(true);
    const ck = pm(["container", "checkpoint", "--with-previous", "--keep", "--print-stats", name]);
    expect(`${ck.code} ${ck.err}`, readLog(userdata, "dump.log")).toBe("0 ");
    const dumpLog = readFileSync(join(userdata, "dump.log"), "utf8");
    expect(dumpLog).toContain('parent_img="../pre-checkpoint"');
    const sd = critStats(join(userdata, "stats-dump"));
    expect(sd.pages_skipped_parent).toBeGreaterThan(0);
    // (Podman 4.3 prints a subset of criu's dump statistics: not pages_skipped_parent)
    expect(printed(ck.out)).toEqual(
      nonZero({
        freezing_time: sd.freezing_time,
        frozen_time: sd.frozen_time,
        memdump_time: sd.memdump_time,
        memwrite_time: sd.memwrite_time,
        pages_scanned: sd.pages_scanned,
        pages_written: sd.pages_written,
      })
    );
    expect(sd.pages_written * 4096).toBe(pagesBytes(join(userdata, "checkpoint")));
    expect(dumpLog).toMatch(new RegExp(`external=\\[.*"net\\[${nsIno}\\]:extRootNetNS"`));
    expect(dumpLog).toContain("is external (key extRootNetNS): not saved");
    const n = ticks(logText(name)).at(-1)!;
    const rs = pm(["container", "restore", "--keep", name]);
    expect(`${rs.code} ${rs.err}`, readLog(userdata, "restore.log")).toBe("0 ");
    const c1 = inspect(name);
    expect(c1.State.Status).toBe("running");
    // the same namespace, given back by runc as inherit_fd extRootNetNS
    expect(statSync(`/proc/${c1.State.Pid}/ns/net`).ino).toBe(nsIno);
    expect(readFileSync(join(userdata, "restore.log"), "utf8")).toContain(
      "joined the external network namespace given for extRootNetNS"
    );
    await waitUntil("the restored counter", () => ticks(logText(name)).filter((t) => t > n).length >= 3, 20000);
    expect(
      ticks(logText(name))
        .filter((t) => t > n)
        .slice(0, 3)
    ).toEqual([n + 1, n + 2, n + 3]);
    expect(logText(name)).not.toContain("BAD");
    pmOk(["rm", "-f", "-t", "0", name]);
  },
  90000
);

/** on failure, criu-bun's Error lines */
function readLog(dir: string, f: string) {
  try {
    return readFileSync(join(dir, f), "utf8")
      .split("\n")
      .filter((l) => l.includes("Error"))
      .join("\n");
  } catch {
    return `(no ${f})`;
  }
}
