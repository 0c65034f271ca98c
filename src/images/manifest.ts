// criu-bun.sum: the checksum of every metadata image of a criu-bun dump, written once they are
// all written. Restore of a dump marked all_images (inventory.img) checks it before reading any
// other image, so a flipped bit, a truncation, or one image copied over another is refused naming
// the file, even where the damaged field would still look plausible (a register, an fd table of
// another process). Page bytes are covered by pages-N.idx (itself listed here), inventory.img and
// stats by nothing: the first is checked field by field, the others are not used by restore.
// Text, one line per image: "<XXH64 in 16 hex digits>  <file name>". CRIU ignores the file. It
// catches damage, not forgery: whoever can write the images can write this file too.
import { readdirSync, readFileSync, existsSync, writeFileSync, renameSync } from "../sys/fs";
import { join } from "../sys/path";
import { CriuError } from "../log";
import { writtenHash } from "./safefs";

const MANIFEST = "criu-bun.sum";

function covered(f: string): boolean {
  if (/^pages-\d+\.idx$/.test(f)) return true;
  return f.endsWith(".img") && f !== "inventory.img" && !f.startsWith("stats-") && !/^pages-\d+\.img$/.test(f);
}

const hex = (h: bigint) => h.toString(16).padStart(16, "0");
const hash = (b: Uint8Array) => hex(Bun.hash.xxHash64(b));

/** After every image is written (pages, idx and metadata): list them with their checksums (those
 * of the files this process wrote and nobody changed since as it hashed them then, the others read). */
export function writeManifest(dir: string) {
  const lines = readdirSync(dir)
    .filter(covered)
    .sort()
    .map((f) => {
      const known = writtenHash(join(dir, f));
      return `${known !== undefined ? hex(known) : hash(readFileSync(join(dir, f)))}  ${f}\n`;
    });
  const tmp = join(dir, `.${MANIFEST}.tmp${process.pid}`);
  writeFileSync(tmp, lines.join(""), { mode: 0o600 });
  renameSync(tmp, join(dir, MANIFEST));
}

/** Every image the manifest lists is there and unchanged; read: XXH64 of the images the caller has
 *  read and decoded, by path (image.ts trackReads), checked as read instead of read again. */
export function verifyManifest(dir: string, read?: Map<string, bigint>) {
  const path = join(dir, MANIFEST);
  if (!existsSync(path))
    throw new CriuError(
      "restore",
      `${path} is missing (inventory.img says criu-bun wrote this dump, with checksums of its images)`
    );
  const text = readFileSync(path, "latin1");
  const lines = text.split("\n");
  if (lines.pop() !== "") throw new CriuError("restore", `${path} is truncated`);
  for (const [i, l] of lines.entries()) {
    const m = /^([0-9a-f]{16})  ([^/\n]+)$/.exec(l);
    if (!m || !covered(m[2])) throw new CriuError("restore", `${path}: line ${i + 1} is damaged`);
    const f = join(dir, m[2]);
    const known = read?.get(f);
    if (known !== undefined) {
      if (hex(known) !== m[1])
        throw new CriuError("restore", `${f} is damaged: its checksum differs from the one in ${MANIFEST}`);
      continue;
    }
    if (!existsSync(f)) throw new CriuError("restore", `${f} is missing (listed in ${MANIFEST})`);
    if (hash(readFileSync(f)) !== m[1])
      throw new CriuError("restore", `${f} is damaged: its checksum differs from the one in ${MANIFEST}`);
  }
}
