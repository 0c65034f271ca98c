// Process trees: shapes, sessions, groups, zombies, and what processes share.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  readFileSync,
  readdirSync,
  existsSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
  readlinkSync,
  mkdirSync,
  rmdirSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  startWorkload,
  trigger,
  waitResult,
  isAlive,
  criuBunCommand,
  criuBun,
  waitUntil,
  cpuTicks,
  killWorkload,
} from "./harness";
import {
  dump,
  restore,
  imagesDir,
  cleanupImages,
  waitReaped,
  dumpRestoreVerify,
  havePeer,
  roundTrip,
} from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

function ids(pid: number) {
  const f = readFileSync(`/proc/${pid}/stat`, "latin1")
    .replace(/^.*\) /s, "")
    .split(" ");
  return { state: f[0], ppid: +f[1], pgid: +f[2], sid: +f[3] };
}

describe("process trees", () => {
  test("3 levels, 6 processes, 2 sessions, 3 groups and a zombie keep PIDs, PPIDs, PGIDs, SIDs", async () => {
    const w = await startWorkload("tree");
    const members = readdirSync(w.dir)
      .filter((f) => f.startsWith("s-"))
      .map((f) => {
        const [pid, ppid, pgid, sid] = readFileSync(join(w.dir, f), "utf8").trim().split(" ").map(Number);
        return { name: f.slice(2), pid, ppid, pgid, sid };
      });
    expect(members.length).toBe(5);
    const before = new Map([w.pid, ...members.map((m) => m.pid)].map((p) => [p, ids(p)]));
    expect(new Set([...before.values()].map((i) => i.sid)).size).toBe(2);
    expect(new Set([...before.values()].map((i) => i.pgid)).size).toBe(3);
    const kids = readFileSync(`/proc/${w.pid}/task/${w.pid}/children`, "utf8").trim().split(/\s+/).map(Number);
    const z = kids.find((k) => ids(k).state === "Z")!;
    expect(z).toBeGreaterThan(0);

    const dir = imagesDir("tree");
    dump(w.pid, dir);
    for (const p of before.keys()) expect(isAlive(p)).toBe(false);
    // every live process killed back to back; their few pages left to them to free (killAndFree)
    expect(readFileSync(join(dir, "dump.log"), "utf8")).toMatch(
      /killed 6 process\(es\), their [\d.]+ MiB of pages left to them to free/
    );
    const r = await restore(dir, w.pid);
    for (const m of members) await waitUntil("the restored child to run", () => isAlive(m.pid));
    for (const [p, i] of before) {
      const now = ids(p);
      expect({ p, ppid: now.ppid, pgid: now.pgid, sid: now.sid }).toEqual({
        p,
        ppid: p === w.pid ? now.ppid : i.ppid,
        pgid: i.pgid,
        sid: i.sid,
      });
    }
    expect(ids(z).state).toBe("Z");
    expect(ids(z).ppid).toBe(w.pid);
    trigger(w);
    const res = await waitResult(w, 15000);
    expect(res.text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});

/** children of pid, found through every process's stat (any thread may be the parent) */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (
        +readFileSync(`/proc/${e}/stat`, "latin1")
          .replace(/^.*\) /s, "")
          .split(" ")[1] === pid
      )
        out.push(+e);
    } catch {}
  }
  return out;
}

describe("pipelines", () => {
  test("yes | head | sha256sum paused mid-stream gives the same digest as an uninterrupted run", async () => {
    const n = 600_000_000;
    const expected = Bun.spawnSync(["bash", "-c", `yes 0123456789abcdef | head -c ${n} | sha256sum`])
      .stdout.toString()
      .split(" ")[0];
    const w = await startWorkload("pipeline.sh", [String(n)]);
    // yes, head, sha256sum all running (mid-stream) and data already flowing through the pipes
    await waitUntil(
      "the 3 pipeline processes with data in flight",
      () => childrenOf(w.pid).length === 3 && childrenOf(w.pid).every((k) => cpuTicks(k) > 0)
    );
    const kids = childrenOf(w.pid);
    const dir = imagesDir("pipe");
    dump(w.pid, dir);
    for (const k of kids) expect(isAlive(k)).toBe(false);
    const r = await restore(dir, w.pid);
    const res = await waitResult(w, 30000);
    expect(res.text.split("\n")[1]).toBe(expected);
    expect(await r.proc.exited).toBe(0);
  });
});

describe("sharing between processes", () => {
  test("MAP_SHARED anonymous memory, POSIX and SysV shared memory, one open file description stay shared", async () => {
    const w = await startWorkload("shared");
    const dir = imagesDir("shared");
    dump(w.pid, dir);
    expect(readdirSync(dir).some((f) => f.startsWith("pagemap-shmem-"))).toBe(true);
    expect(readdirSync(dir)).toContain("ipcns-shm-1.img");
    const r = await restore(dir, w.pid);
    trigger(w);
    const res = await waitResult(w, 15000);
    expect(res.text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});

describe("PID namespaces", () => {
  test("a tree in its own PID namespace (unshare --pid --fork --mount-proc) comes back in a fresh one with the same PIDs", async () => {
    await buildWorkloads();
    const dir = mkdtempSync(join(tmpdir(), "criu-bun-wl-pidns-"));
    const outer = Bun.spawn(
      ["unshare", "--pid", "--fork", "--mount-proc", join(import.meta.dir, "workloads/bin/tree"), dir],
      {
        stdin: "ignore",
        stdout: "ignore",
        stderr: "ignore",
        detached: true,
      }
    );
    try {
      await waitUntil("the namespaced tree to be ready", () => existsSync(join(dir, "ready")), 10000);
      expect(readFileSync(join(dir, "ready"), "utf8").trim()).toBe("1"); // it is init in there
      const init = childrenOf(outer.pid)[0];
      expect(init).toBeGreaterThan(0);
      const nsPids = (p: number) =>
        /^NSpid:\s*(.*)$/m
          .exec(readFileSync(`/proc/${p}/status`, "utf8"))![1]
          .trim()
          .split(/\s+/)
          .map(Number);
      expect(nsPids(init)).toEqual([init, 1]);
      const inside = readdirSync(dir)
        .filter((f) => f.startsWith("s-"))
        .map((f) => Number(readFileSync(join(dir, f), "utf8").split(" ")[0]))
        .sort((a, b) => a - b);
      expect(inside.length).toBe(5);
      const img = imagesDir("pidns");
      dump(init, img);
      await outer.exited;
      // the images hold the namespace's PIDs, and those PIDs are taken here (by our own init, 1, ...)
      const ps = JSON.parse(Bun.spawnSync(["crit", "decode", "-i", join(img, "pstree.img")]).stdout.toString());
      expect(ps.entries.map((e: any) => e.pid).sort((a: number, b: number) => a - b)).toEqual(
        [1, ...inside, ...ps.entries.map((e: any) => e.pid).filter((p: number) => p !== 1 && !inside.includes(p))].sort(
          (a, b) => a - b
        )
      );
      expect(existsSync("/proc/1")).toBe(true);
      const r = Bun.spawn([...criuBunCommand(), "restore", "-D", img, "-o", "restore.log", "-v4"], {
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      const logText = () =>
        existsSync(join(img, "restore.log")) ? readFileSync(join(img, "restore.log"), "utf8") : "";
      await waitUntil("restore to finish", () => logText().includes("Restore finished") || r.exitCode !== null, 20000);
      if (r.exitCode !== null) throw new Error((await new Response(r.stderr).text()) + logText());
      const newInit = childrenOf(r.pid)[0];
      expect(newInit).toBeGreaterThan(0);
      expect(nsPids(newInit)).toEqual([newInit, 1]);
      expect(readlinkSync(`/proc/${newInit}/ns/pid`)).not.toBe(readlinkSync("/proc/self/ns/pid"));
      writeFileSync(join(dir, "go"), "go\n");
      await waitUntil("the restored tree's result", () => existsSync(join(dir, "result")), 15000);
      expect(readFileSync(join(dir, "result"), "utf8")).toStartWith("PASS");
      expect(await r.exited).toBe(0);
    } finally {
      try {
        outer.kill(9);
      } catch {}
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("PID namespaces: a multithreaded init", () => {
  // runc checkpoint of a container whose init had 4 threads hung in 5 of 6 runs: after the kill,
  // the init's last thread to exit waits in zap_pid_ns_processes for every other task of the
  // namespace to be released, the zombies of its own threads (traced by criu-bun, so reaped by it)
  // included, while criu-bun waited for that one thread first
  test("init of a PID namespace with 8 threads: 5 dumps in a row end (each within 20 s), and the last restores and runs on", async () => {
    await buildWorkloads();
    let dir = "";
    let outer: ReturnType<typeof Bun.spawn> | undefined;
    let init = 0;
    try {
      for (let round = 0; round < 5; round++) {
        dir = mkdtempSync(join(tmpdir(), "criu-bun-wl-pidns-mt-"));
        outer = Bun.spawn(
          [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "setsid",
            join(import.meta.dir, "workloads/bin/threads"),
            dir,
            "8",
          ],
          { stdin: "ignore", stdout: "ignore", stderr: "ignore", detached: true }
        );
        await waitUntil("the namespaced threads to be ready", () => existsSync(join(dir, "ready")), 10000);
        init = childrenOf(outer.pid)[0];
        expect(readdirSync(`/proc/${init}/task`).length).toBe(9);
        const img = imagesDir(`pidns-mt${round}`);
        const d = Bun.spawn([...criuBunCommand(), "dump", "-t", String(init), "-D", img, "-o", "dump.log", "-v4"], {
          stdin: "ignore",
          stdout: "ignore",
          stderr: "pipe",
        });
        const t0 = performance.now();
        while (d.exitCode === null && performance.now() - t0 < 20000) await Bun.sleep(20);
        if (d.exitCode === null) d.kill(9);
        expect(
          d.exitCode === null ? "still running after 20 s" : `exit ${d.exitCode}`,
          `${await new Response(d.stderr).text()}${
            existsSync(join(img, "dump.log"))
              ? readFileSync(join(img, "dump.log"), "utf8")
                  .split("\n")
                  .filter((l) => l.includes("Error"))
                  .join("\n")
              : ""
          }`
        ).toBe("exit 0");
        await outer.exited;
        init = 0; // killed by the dump: its PID may be someone else's by now
        if (round < 4) rmSync(dir, { recursive: true, force: true });
        else {
          const r = Bun.spawn([...criuBunCommand(), "restore", "-D", img, "-d"], {
            stdin: "ignore",
            stdout: "ignore",
            stderr: "pipe",
          });
          expect(await r.exited).toBe(0);
          writeFileSync(join(dir, "go"), "go\n");
          await waitUntil("the restored threads' result", () => existsSync(join(dir, "result")), 15000);
          expect(readFileSync(join(dir, "result"), "utf8")).toStartWith("PASS");
        }
      }
    } finally {
      for (const p of [init, outer?.pid ?? 0])
        try {
          if (p > 0) process.kill(p, "SIGKILL");
        } catch {}
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});

describe("zombies", () => {
  // runc's differential test: a container's zombie came back as "(11) Z" where CRIU 4.2 gives "(sleep) Z"
  for (const [dumper, title] of [
    ["criu-bun", "a zombie comes back with its name (sh -c 'sleep 0.1 & exec sleep 1000': sleep's unreaped child)"],
    ["criu-4.2", "CRIU 4.2 dumps a zombie, criu-bun restores it with its name (comm) and state Z"],
  ] as const) {
    test.skipIf(dumper === "criu-4.2" && !havePeer)(title, async () => {
      const sh = Bun.spawn(["sh", "-c", "sleep 0.1 & exec sleep 1000"], {
        stdin: "ignore",
        stdout: "ignore",
        stderr: "ignore",
        detached: true,
      });
      try {
        const stat = (p: number) => readFileSync(`/proc/${p}/stat`, "latin1");
        let z = 0;
        await waitUntil(
          "sleep's child to be a zombie",
          () => {
            z = childrenOf(sh.pid)[0] ?? 0;
            return z > 0 && / Z /.test(stat(z)) && stat(sh.pid).includes("(sleep)");
          },
          10000
        );
        expect(stat(z)).toStartWith(`${z} (sleep) Z `);
        await roundTrip(sh.pid, {
          dumper,
          restorer: "criu-bun",
          tag: `zombie-comm-${dumper}`,
          restoreArgs: ["-d"],
          verdict: async () => {
            expect(childrenOf(sh.pid)).toEqual([z]);
            expect(stat(z)).toStartWith(`${z} (sleep) Z `);
            expect(readFileSync(`/proc/${z}/comm`, "latin1")).toBe("sleep\n");
          },
        });
      } finally {
        try {
          process.kill(sh.pid, "SIGKILL");
        } catch {}
      }
    });
  }
});

describe("children that exit while the tree is frozen", () => {
  test("a shell running /bin/true without pause: 20 dumps in a row succeed (a child exiting mid-freeze is dumped as its parent's zombie); the last image restores and the shell counts on", async () => {
    const work = mkdtempSync(join(tmpdir(), "criu-bun-forkloop-"));
    const tick = join(work, "tick");
    const sh = Bun.spawn(
      ["sh", "-c", `i=0; while :; do i=$((i+1)); echo $i > ${tick}.new; mv ${tick}.new ${tick}; /bin/true; done`],
      {
        stdin: "ignore",
        stdout: "ignore",
        stderr: "ignore",
        detached: true /* a session leader, as dump wants without --shell-job */,
      }
    );
    const count = () => {
      try {
        return Number(readFileSync(tick, "utf8")) || 0;
      } catch {
        return 0;
      }
    };
    try {
      await waitUntil("the shell to count", () => count() >= 20, 30000);
      let zombies = 0,
        dir = "";
      for (let i = 0; i < 20; i++) {
        dir = imagesDir(`forkloop${i}`);
        dump(sh.pid, dir, i < 19 ? ["--leave-running"] : []);
        if (/dumped as a zombie/.test(readFileSync(join(dir, "dump.log"), "utf8"))) zombies++;
      }
      console.error(`forkloop: ${zombies} of 20 dumps caught a child that exited while being frozen`);
      await sh.exited;
      const at = count();
      const r = await restore(dir, sh.pid);
      await waitUntil("the restored shell to count on", () => count() >= at + 20, 10000);
      process.kill(sh.pid, "SIGKILL");
      await r.proc.exited;
    } finally {
      try {
        process.kill(sh.pid, "SIGKILL");
      } catch {}
      rmSync(work, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("copy-on-write", () => {
  test("a child keeps a private mapping shared with its parent, but a page only the parent wrote (in a run of the parent's pages that began in another VMA) reads as zeroes in the child", async () => {
    const { dir } = await dumpRestoreVerify("cowdrop");
    expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(
      /page\(s\) inherited from the parent that it did not have dropped/
    );
  });

  test("a fork-heavy tree comes back without doubling its memory (PSS within 10%)", async () => {
    const w = await startWorkload("forky", ["6"]);
    await waitUntil("6 forked children", () => childrenOf(w.pid).length === 6);
    const pids = () => [w.pid, ...childrenOf(w.pid)];
    const pss = () =>
      pids().reduce(
        (s, p) => s + Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/smaps_rollup`, "utf8"))![1]),
        0
      );
    const kids = childrenOf(w.pid);
    expect(kids.length).toBe(6);
    const before = pss();
    const dir = imagesDir("cow");
    dump(w.pid, dir);
    for (const k of kids) expect(isAlive(k)).toBe(false);
    // 7 processes, more than 32 MiB of pages: killed back to back, the largest last with its memory
    // freed from here as well (killAndFree), the others helped after it where not too late
    expect(readFileSync(join(dir, "dump.log"), "utf8")).toMatch(
      /killed 7 process\(es\), the memory of [0-7] freed from here too in [\d.]+ ms/
    );
    const r = await restore(dir, w.pid);
    for (const k of kids) await waitUntil("the restored child to run", () => isAlive(k));
    const after = pss();
    console.error(`forky PSS: ${before} kB before dump, ${after} kB after restore`);
    expect(after).toBeLessThan(before * 1.1);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});

describe("pipes with data in flight", () => {
  test("in one process, both directions between parent and child, a big O_NONBLOCK pipe", async () => {
    const w = await startWorkload("pipes");
    const dir = imagesDir("pipes");
    dump(w.pid, dir);
    expect(readdirSync(dir)).toContain("pipes-data.img");
    const r = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});

describe("CLONE_FILES and CLONE_FS", () => {
  test("a child sharing its parent's fd table and fs still shares them; a plain child does not", async () => {
    const w = await startWorkload("clonefiles");
    const dir = imagesDir("clonefiles");
    dump(w.pid, dir);
    expect(readdirSync(dir).filter((f) => f.startsWith("fdinfo-")).length).toBe(2); // 3 processes, 2 fd tables
    const r = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});

describe("cgroups", () => {
  test("cgroup membership comes back; a missing cgroup is created in criu's default mode (soft), an error with --manage-cgroups=none", async () => {
    const cg = `/sys/fs/cgroup/pids/criu-bun-test-${process.pid}`;
    if (!existsSync("/sys/fs/cgroup/pids")) throw new Error("no pids cgroup hierarchy here");
    mkdirSync(cg, { recursive: true });
    try {
      const w = await startWorkload("tree");
      writeFileSync(join(cg, "cgroup.procs"), `${w.pid}\n`);
      // the root moved after its children were forked: they stay where they were
      const kids = childrenOf(w.pid);
      const line = (p: number) =>
        readFileSync(`/proc/${p}/cgroup`, "utf8")
          .split("\n")
          .find((l) => /:pids:/.test(l));
      expect(line(w.pid)).toEndWith(`:pids:/criu-bun-test-${process.pid}`);
      const before = kids.map(line);
      const dir = imagesDir("cg");
      dump(w.pid, dir);
      await waitReaped(w.pid);
      rmdirSync(cg);
      // --manage-cgroups=none: the cgroups must exist
      let r = criuBun(["restore", "-d", "-D", dir, "--manage-cgroups=none"]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(`cgroup pids:/criu-bun-test-${process.pid} does not exist here`);
      // full would restore properties criu-bun does not save: refused, nothing created
      r = criuBun(["restore", "-d", "-D", dir, "--manage-cgroups=full"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("--manage-cgroups=full: not supported by criu-bun yet");
      expect(existsSync(cg)).toBe(false);
      // criu's default mode, soft, creates the missing cgroup
      const rr = await restore(dir, w.pid);
      expect(line(w.pid)).toEndWith(`:pids:/criu-bun-test-${process.pid}`);
      expect(kids.map(line)).toEqual(before);
      trigger(w);
      expect((await waitResult(w, 15000)).text).toStartWith("PASS");
      expect(await rr.proc.exited).toBe(0);
    } finally {
      for (let i = 0; i < 50 && existsSync(cg); i++) {
        try {
          rmdirSync(cg);
        } catch {
          await Bun.sleep(100);
        }
      }
    }
  });
  test("--cgroup-root pids:/NEW: the tree's pids cgroup is made under the new root and the restored process is in it, the old one left empty; a relative root is refused in one line, nothing restored", async () => {
    const base = "/sys/fs/cgroup/pids";
    if (!existsSync(base)) throw new Error("no pids cgroup hierarchy here");
    const old = `/criu-bun-cgroot-${process.pid}-old`,
      neu = `/criu-bun-cgroot-${process.pid}-new`;
    mkdirSync(join(base, old));
    const pidsCg = (pid: number) => /^\d+:pids:(.*)$/m.exec(readFileSync(`/proc/${pid}/cgroup`, "utf8"))?.[1];
    const w = await startWorkload("counter");
    try {
      writeFileSync(join(base, old, "cgroup.procs"), String(w.pid));
      expect(pidsCg(w.pid)).toBe(old);
      const dir = imagesDir("cgroot");
      dump(w.pid, dir);
      await waitReaped(w.pid);
      const r = criuBun(["restore", "-d", "-D", dir, "--cgroup-root", "pids:criu-bun-relative"]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toBe("Error (restore): cg_root pids:criu-bun-relative: the path must be absolute");
      expect(existsSync(`/proc/${w.pid}`)).toBe(false);
      expect(existsSync(join(base, neu))).toBe(false);
      const rr = await restore(dir, w.pid, ["--cgroup-root", `pids:${neu}`]);
      expect(pidsCg(w.pid)).toBe(neu);
      expect(readFileSync(join(base, old, "cgroup.procs"), "utf8").trim()).toBe("");
      expect(readFileSync(join(dir, "restore.log"), "utf8")).toContain(
        `cg_root: pids cgroups under ${old} go under ${neu}`
      );
      trigger(w);
      expect((await waitResult(w, 15000)).text).toStartWith("PASS");
      expect(await rr.proc.exited).toBe(0);
    } finally {
      killWorkload(w);
      for (const cg of [neu, old])
        for (let i = 0; i < 50 && existsSync(join(base, cg)); i++) {
          try {
            rmdirSync(join(base, cg));
          } catch {
            await Bun.sleep(100);
          }
        }
    }
  });
});

describe("UTS and other namespaces", () => {
  test("a process in its own UTS namespace gets a new one with its hostname; a network namespace with interfaces is refused clearly", async () => {
    const w = await startWorkload("counter", [], {
      wrap: ["unshare", "--uts", "sh", "-c", 'hostname criu-bun-uts-test; exec "$0" "$@"'],
    });
    const host = (pid: number) =>
      Bun.spawnSync(["nsenter", "-u", "-t", String(pid), "hostname"])
        .stdout.toString()
        .trim();
    expect(host(w.pid)).toBe("criu-bun-uts-test");
    const dir = imagesDir("uts");
    dump(w.pid, dir);
    const r = await restore(dir, w.pid);
    expect(readlinkSync(`/proc/${w.pid}/ns/uts`)).not.toBe(readlinkSync("/proc/self/ns/uts"));
    expect(host(w.pid)).toBe("criu-bun-uts-test");
    expect(Bun.spawnSync(["hostname"]).stdout.toString().trim()).not.toBe("criu-bun-uts-test");
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);

    const n = await startWorkload("counter", [], {
      wrap: ["unshare", "--net", "sh", "-c", 'ip link add criu-bun-v0 type veth peer name criu-bun-v1; exec "$0" "$@"'],
    });
    const rn = criuBun(["dump", "-t", String(n.pid), "-D", imagesDir("netns")]);
    expect(rn.code).not.toBe(0);
    expect(rn.stderr).toMatch(
      new RegExp(
        `process ${n.pid} is in its own network namespace with interfaces \\(.*criu-bun-v0.*\\), which criu-bun does not save yet; run criu-bun inside it \\(nsenter --net=/proc/${n.pid}/ns/net\\)`
      )
    );
    trigger(n);
    expect((await waitResult(n, 15000)).text).toStartWith("PASS");
  });
});

describe("time namespaces", () => {
  test("a process in its own time namespace keeps its shifted clocks (they continue from the dump)", async () => {
    const w = await startWorkload("counter", [], {
      wrap: ["unshare", "--time", "--fork", "--monotonic", "1000000", "--boottime", "2000000", "--", "setsid"],
    });
    const uptime = (pid: number) =>
      Number(
        Bun.spawnSync(["nsenter", "-T", "-t", String(pid), "cat", "/proc/uptime"])
          .stdout.toString()
          .split(" ")[0]
      );
    const host = () => Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]);
    const before = uptime(w.pid);
    expect(before - host()).toBeGreaterThan(1_999_000);
    const dir = imagesDir("timens");
    dump(w.pid, dir);
    expect(readdirSync(dir).some((f) => f.startsWith("timens-"))).toBe(true);
    const r = await restore(dir, w.pid);
    expect(readlinkSync(`/proc/${w.pid}/ns/time`)).not.toBe(readlinkSync("/proc/self/ns/time"));
    const after = uptime(w.pid);
    expect(after).toBeGreaterThanOrEqual(before); // never backwards
    expect(after - before).toBeLessThan(5); // continues from the dump: the downtime is not counted
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});

describe("network namespaces", () => {
  test("a process alone in its own network namespace (loopback only) comes back in a new one, connections intact", async () => {
    const port = 7700 + Math.floor(Math.random() * 200);
    const w = await startWorkload("netnsloop.py", [String(port)], {
      wrap: ["unshare", "--net", "sh", "-c", 'ip link set lo up; exec "$0" "$@"'],
    });
    expect(readlinkSync(`/proc/${w.pid}/ns/net`)).not.toBe(readlinkSync("/proc/self/ns/net"));
    const dir = imagesDir("netns-lo");
    dump(w.pid, dir, ["--tcp-established"]);
    const r = await restore(dir, w.pid);
    expect(readlinkSync(`/proc/${w.pid}/ns/net`)).not.toBe(readlinkSync("/proc/self/ns/net"));
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});

describe("IPC namespaces", () => {
  test("a tree in its own IPC namespace comes back in a new one with its SysV segment (same id) and the namespace's sysctls", async () => {
    const w = await startWorkload("shared", [], { wrap: ["unshare", "--ipc", "--"] });
    const ipcOf = (p: number) => readlinkSync(`/proc/${p}/ns/ipc`);
    expect(ipcOf(w.pid)).not.toBe(ipcOf(process.pid));
    // the namespace's own limits, changed from the kernel's defaults (which a new namespace starts with)
    const vars = [
      "kernel/sem",
      "kernel/msgmax",
      "kernel/msgmnb",
      "kernel/msgmni",
      "kernel/shmmax",
      "kernel/shmall",
      "kernel/shmmni",
      "kernel/shm_rmid_forced",
      "fs/mqueue/queues_max",
      "fs/mqueue/msg_max",
      "fs/mqueue/msgsize_max",
      "fs/mqueue/msg_default",
      "fs/mqueue/msgsize_default",
    ];
    const readVars = (p: number) =>
      Bun.spawnSync(["nsenter", "-i", "-t", String(p), "sh", "-c", vars.map((v) => `cat /proc/sys/${v}`).join("; ")])
        .stdout.toString()
        .trim()
        .split("\n");
    const set = Bun.spawnSync(
      [
        "nsenter",
        "-i",
        "-t",
        String(w.pid),
        "sh",
        "-c",
        "echo '251 32001 33 129' > /proc/sys/kernel/sem; echo 12345 > /proc/sys/kernel/msgmax; echo 23456 > /proc/sys/kernel/msgmnb; echo 99 > /proc/sys/kernel/msgmni; " +
          "echo 1073741824 > /proc/sys/kernel/shmmax; echo 2097152 > /proc/sys/kernel/shmall; echo 2048 > /proc/sys/kernel/shmmni; echo 1 > /proc/sys/kernel/shm_rmid_forced; " +
          "echo 77 > /proc/sys/fs/mqueue/queues_max; echo 20 > /proc/sys/fs/mqueue/msg_max; echo 16384 > /proc/sys/fs/mqueue/msgsize_max; echo 9 > /proc/sys/fs/mqueue/msg_default; echo 4096 > /proc/sys/fs/mqueue/msgsize_default",
      ],
      { stderr: "pipe" }
    );
    expect(set.stderr.toString()).toBe("");
    const before = readVars(w.pid);
    expect(before).toEqual([
      "251\t32001\t33\t129",
      "12345",
      "23456",
      "99",
      "1073741824",
      "2097152",
      "2048",
      "1",
      "77",
      "20",
      "16384",
      "9",
      "4096",
    ]);
    const segs = Bun.spawnSync(["nsenter", "-i", "-t", String(w.pid), "ipcs", "-m"]).stdout.toString();
    const dir = imagesDir("ipcns");
    dump(w.pid, dir);
    // CRIU's image of them, which crit reads
    // named by the namespace's id, as CRIU names them
    expect(
      readdirSync(dir)
        .filter((f) => f.startsWith("ipcns-"))
        .sort()
    ).toEqual(["ipcns-shm-14.img", "ipcns-var-14.img"]);
    const crit = JSON.parse(Bun.spawnSync(["crit", "decode", "-i", join(dir, "ipcns-var-14.img")]).stdout.toString());
    expect(crit.entries[0].msg_ctlmax).toBe(12345);
    const r = await restore(dir, w.pid);
    expect(ipcOf(w.pid)).not.toBe(ipcOf(process.pid));
    expect(readVars(w.pid)).toEqual(before);
    expect(
      Bun.spawnSync(["nsenter", "-i", "-t", String(w.pid), "ipcs", "-m"])
        .stdout.toString()
        .split("\n")
        .filter((l) => /^0x/.test(l))
        .map((l) => l.split(/\s+/).slice(0, 2).join(" "))
    ).toEqual(
      segs
        .split("\n")
        .filter((l) => /^0x/.test(l))
        .map((l) => l.split(/\s+/).slice(0, 2).join(" "))
    );
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});
