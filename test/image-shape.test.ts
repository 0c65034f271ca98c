// An image criu-bun cannot interpret exactly is refused before anything is created, naming the
// file and the field: the signal table must be CRIU's 62 native entries (an older criu-bun wrote
// 64 indexed by signal - 1, which read as CRIU's would silently shift every disposition).
import { afterAll, expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { cleanup, startWorkload, criuBun, isAlive } from "./harness";
import { dump, imagesDir, cleanupImages, waitReaped } from "./engine-helpers";
import { readImage, writeImage } from "../src/images/image";
import * as S from "../src/images/schemas";

afterAll(() => {
  cleanup();
  cleanupImages();
});

async function dumped() {
  const w = await startWorkload("counter");
  const dir = imagesDir("shape");
  dump(w.pid, dir);
  await waitReaped(w.pid);
  return { pid: w.pid, dir };
}

function editCore(dir: string, pid: number, edit: (c: S.core_entry) => void) {
  const [core] = readImage(dir, `core-${pid}.img`, "CORE");
  edit(core);
  writeImage(dir, `core-${pid}.img`, "CORE", [core]);
}

function refused(dir: string, pid: number, what: RegExp) {
  const r = criuBun(["restore", "-D", dir, "-d"]);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(what);
  expect(r.stderr.trim().split("\n").length).toBe(1); // one line, no stack
  expect(isAlive(pid)).toBe(false); // nothing was created
}

test("a dump writes CRIU's table: 62 sigactions, compat_sigaction false", async () => {
  const { pid, dir } = await dumped();
  const [core] = readImage(dir, `core-${pid}.img`, "CORE");
  expect(core.tc!.sigactions.length).toBe(62);
  expect(core.tc!.sigactions.every((e) => e.compatSigaction === false)).toBe(true);
}, 60000);

test("64 sigactions (signal - 1 indexing) are refused naming the file and field", async () => {
  const { pid, dir } = await dumped();
  editCore(dir, pid, (c) => {
    c.tc!.sigactions.push(create(S.sa_entrySchema, {}), create(S.sa_entrySchema, {}));
  });
  refused(dir, pid, new RegExp(`core-${pid}\\.img: tc\\.sigactions has 64 entries`));
}, 60000);

test("a 32-bit (compat) sigaction is refused naming the entry", async () => {
  const { pid, dir } = await dumped();
  editCore(dir, pid, (c) => {
    c.tc!.sigactions[5].compatSigaction = true;
  });
  refused(dir, pid, new RegExp(`core-${pid}\\.img: tc\\.sigactions\\[5\\]\\.compat_sigaction is set`));
}, 60000);
