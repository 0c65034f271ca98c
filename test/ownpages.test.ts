// sys/ownpages.ts on this very process: read-only private file pages are unmapped (and read back
// from the file as they were), a page of such a mapping written before it was made read-only (a
// private copy, as a relocation under RELRO) keeps what was written; releasePages zeroes the whole
// pages of a buffer and nothing around them.
import { afterAll, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { libc } from "../src/sys/libc";
import { trimOwnPages, releasePages } from "../src/sys/ownpages";
import { addr } from "../src/sys/addr";

const PAGE = 4096;
const dir = mkdtempSync(join(tmpdir(), "criu-bun-ownpages-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** /proc/self/pagemap's entry of the page at address a: [present, file page or shared] */
function pageState(a: number): [boolean, boolean] {
  const fd = openSync("/proc/self/pagemap", "r");
  try {
    const e = new BigUint64Array(1);
    expect(readSync(fd, new Uint8Array(e.buffer), 0, 8, (a / PAGE) * 8)).toBe(8);
    return [(e[0] & (1n << 63n)) !== 0n, (e[0] & (1n << 61n)) !== 0n];
  } finally {
    closeSync(fd);
  }
}

test("trimOwnPages unmaps clean read-only file pages and keeps a private copy's contents", () => {
  // 4 pages, each filled with its own byte
  const path = join(dir, "file");
  const content = new Uint8Array(4 * PAGE);
  for (let p = 0; p < 4; p++) content.fill(0x41 + p, p * PAGE, (p + 1) * PAGE);
  writeFileSync(path, content);
  const fd = openSync(path, "r");
  // private, writable for a moment: page 1 written (a private copy), then the whole made read-only
  const at = libc.mmap(null, 4 * PAGE, 1 | 2, 2 /* MAP_PRIVATE */, fd, 0) as Pointer;
  closeSync(fd);
  const a = Number(at);
  expect(a > 0 && a !== -1).toBe(true);
  const view = new Uint8Array(toArrayBuffer(at, 0, 4 * PAGE));
  view.fill(0x7a, PAGE, PAGE + 100);
  expect(libc.mprotect(at, 4 * PAGE, 1 /* PROT_READ */)).toBe(0);
  // pages 0 and 2 read: mapped from the page cache
  expect(view[0] + view[2 * PAGE]).toBe(0x41 + 0x43);
  expect(pageState(a)).toEqual([true, true]);
  expect(pageState(a + PAGE)).toEqual([true, false]); // the private copy

  const t = trimOwnPages();
  expect(t.error).toBeUndefined();
  expect(t.bytes).toBeGreaterThanOrEqual(2 * PAGE);
  expect(t.kept).toBeGreaterThanOrEqual(1);

  expect(pageState(a)[0]).toBe(false);
  expect(pageState(a + 2 * PAGE)[0]).toBe(false);
  expect(pageState(a + PAGE)).toEqual([true, false]); // still mapped, still ours
  // every byte as before: the clean pages read again from the file, the copy as written
  const want = content.slice();
  want.fill(0x7a, PAGE, PAGE + 100);
  expect(Buffer.from(view).equals(Buffer.from(want))).toBe(true);
  expect(pageState(a)).toEqual([true, true]);
});

test("releasePages zeroes the whole pages inside a buffer, not the bytes around them", () => {
  const buf = new Uint8Array(64 * PAGE).fill(9);
  const inner = buf.subarray(100, 100 + 10 * PAGE);
  const given = releasePages(inner);
  const a = addr(inner);
  const from = Math.ceil(a / PAGE) * PAGE - a + 100,
    to = Math.floor((a + inner.byteLength) / PAGE) * PAGE - a + 100;
  expect(given).toBe(to - from);
  expect(given).toBeGreaterThanOrEqual(9 * PAGE);
  for (let i = 0; i < buf.length; i++) {
    const zero = i >= from && i < to;
    if (buf[i] !== (zero ? 0 : 9)) throw new Error(`byte ${i}: ${buf[i]}, expected ${zero ? 0 : 9}`);
  }
});
