// Codec throughput on heap-like data (src/codec/sample.ts: ~30% zero, ~55% structured, ~15% random
// pages): zero-page scan, LZ4 compress / decompress (64 KiB blocks by default), XXH64 and XXH32,
// plus the compression ratio against `lz4 -1` (independent 64 KiB blocks) on the same bytes.
// Usage: bun scripts/bench-codec.ts [MiB=256] [blockKiB=64]; BENCH_CODEC_INPUT=FILE uses a file's bytes     (run `bun scripts/build.ts --no-compile` first)
import { PageCodec } from "../src/codec/codec";
import { heapLike } from "../src/codec/sample";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const BLOCK = Number(process.argv[3] ?? 64) * 1024;
const CHUNK = 4 << 20; // what the dumper would read per process_vm_readv batch
// BENCH_CODEC_INPUT=FILE: measure on these bytes instead (e.g. pages-1.img of a real process's dump),
// cut to a whole number of 4 MiB chunks
const inputFile = process.env.BENCH_CODEC_INPUT;
const fileBytes = inputFile ? readFileSync(inputFile) : undefined;
const MiB = fileBytes ? Math.floor(fileBytes.length / CHUNK) * 4 : Number(process.argv[2] ?? 256);
const TOTAL = MiB << 20;
if (!TOTAL) throw new Error("input shorter than one 4 MiB chunk");
const data = fileBytes ? new Uint8Array(fileBytes.buffer, fileBytes.byteOffset, TOTAL) : heapLike(TOTAL, 1);
console.log(`input: ${inputFile ?? "heap-like sample (src/codec/sample.ts)"}, ${MiB} MiB`);
const codec = new PageCodec({ capacity: CHUNK });
const input = codec.inputView(CHUNK);

function gbs(bytes: number, ms: number) {
  return `${(bytes / ms / 1e6).toFixed(2)} GB/s`;
}
function bench(name: string, runs: number, fn: () => void) {
  const times: number[] = [];
  fn(); // warm up
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const med = times[times.length >> 1]!;
  console.log(`${name.padEnd(28)} ${gbs(TOTAL, med).padStart(12)}   (median of ${runs}, ${med.toFixed(0)} ms)`);
}

// The copy into WASM memory stands in for process_vm_readv; it is timed separately.
bench("copy into WASM memory", 3, () => {
  for (let off = 0; off < TOTAL; off += CHUNK) input.set(data.subarray(off, off + CHUNK));
});

let zeroPages = 0;
bench("zero-page scan (+copy)", 3, () => {
  zeroPages = 0;
  for (let off = 0; off < TOTAL; off += CHUNK) {
    input.set(data.subarray(off, off + CHUNK));
    codec.zeroPages(0, CHUNK / 4096);
    zeroPages += codec.lastZeroCount;
  }
});

// Compress in place (no copy) to isolate the codec: load each chunk once per run, compress its blocks.
const blocks: Uint8Array[] = [];
let compressed = 0,
  compressMs = 0;
{
  const times: number[] = [];
  for (let r = 0; r < 3; r++) {
    let ms = 0,
      size = 0;
    const keep = r === 0;
    for (let off = 0; off < TOTAL; off += CHUNK) {
      input.set(data.subarray(off, off + CHUNK));
      const t0 = performance.now();
      for (let b = 0; b < CHUNK; b += BLOCK) {
        const out = codec.compress(b, BLOCK);
        size += out.length;
        if (keep) blocks.push(out.slice());
      }
      ms += performance.now() - t0;
    }
    times.push(ms);
    compressed = size;
  }
  times.sort((a, b) => a - b);
  compressMs = times[1]!;
  console.log(
    `${"lz4 compress".padEnd(28)} ${gbs(TOTAL, compressMs).padStart(12)}   (median of 3, ${compressMs.toFixed(0)} ms, ${BLOCK >> 10} KiB blocks)`
  );
}

{
  const times: number[] = [];
  const blocksPerChunk = CHUNK / BLOCK;
  for (let r = 0; r < 3; r++) {
    let ms = 0;
    for (let i = 0; i < blocks.length; i++) {
      const blk = blocks[i]!;
      const t0 = performance.now();
      const n = codec.decompressToInput(blk, (i % blocksPerChunk) * BLOCK, BLOCK);
      ms += performance.now() - t0;
      if (n !== BLOCK) throw new Error("bad decompression");
    }
    times.push(ms);
  }
  times.sort((a, b) => a - b);
  console.log(
    `${"lz4 decompress (+stage)".padEnd(28)} ${gbs(TOTAL, times[1]!).padStart(12)}   (median of 3, ${times[1]!.toFixed(0)} ms; includes copying each block in)`
  );
  // check a sample against the source
  input.set(data.subarray(0, CHUNK));
  for (let b = 0; b < blocksPerChunk; b++) codec.decompressToInput(blocks[b]!, b * BLOCK, BLOCK);
  if (Buffer.compare(codec.inputView(CHUNK), data.subarray(0, CHUNK)) !== 0) throw new Error("round trip mismatch");
}

// The same block compression by native liblz4 (LZ4_compress_default, in process through bun:ffi) for reference.
try {
  const { dlopen, FFIType, ptr } = await import("bun:ffi");
  const lib = dlopen("liblz4.so.1", {
    LZ4_compress_default: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    LZ4_decompress_safe: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  }).symbols;
  const out = new Uint8Array(PageCodec.lz4Bound(BLOCK));
  const base = ptr(data) as unknown as number,
    outp = ptr(out);
  const times: number[] = [];
  let size = 0;
  for (let r = 0; r < 3; r++) {
    size = 0;
    const t0 = performance.now();
    for (let off = 0; off < TOTAL; off += BLOCK) size += lib.LZ4_compress_default(base + off, outp, BLOCK, out.length);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  console.log(
    `${"liblz4 compress (native)".padEnd(28)} ${gbs(TOTAL, times[1]!).padStart(12)}   (median of 3, ratio ${(TOTAL / size).toFixed(3)})`
  );
  const dst = new Uint8Array(BLOCK),
    dstp = ptr(dst);
  const staged = blocks.map((b) => [ptr(b), b.length] as const);
  const dt: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    for (const [p, n] of staged) lib.LZ4_decompress_safe(p, dstp, n, BLOCK);
    dt.push(performance.now() - t0);
  }
  dt.sort((a, b) => a - b);
  console.log(
    `${"liblz4 decompress (native)".padEnd(28)} ${gbs(TOTAL, dt[1]!).padStart(12)}   (median of 3, our blocks)`
  );
} catch (e) {
  console.log(`liblz4 not loadable (${(e as Error).message}): no native comparison`);
}

for (const [name, fn] of [
  ["zero-scan (resident, early exit)", (n: number) => codec.zeroPages(0, n / 4096)],
  ["xxh64 checksum", (n: number) => codec.checksum(0, n)],
  ["xxh32 checksum", (n: number) => codec.xxh32(0, n)],
] as const) {
  input.set(data.subarray(0, CHUNK));
  const times: number[] = [];
  for (let r = 0; r < 4; r++) {
    const t0 = performance.now();
    for (let off = 0; off < TOTAL; off += CHUNK) fn(CHUNK); // same resident chunk: codec speed only
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  console.log(`${name.padEnd(28)} ${gbs(TOTAL, times[2]!).padStart(12)}   (median of 4, ${times[2]!.toFixed(0)} ms)`);
}

console.log(`zero pages: ${((zeroPages / (TOTAL / 4096)) * 100).toFixed(1)}%`);
console.log(`ratio ours (${BLOCK >> 10} KiB blocks): ${(TOTAL / compressed).toFixed(3)}  (${compressed} bytes)`);

// lz4 -1 on the same bytes, independent blocks of the same size when lz4 offers it (64K/256K/1M/4M).
const bsFlag = { 65536: "-B4", 262144: "-B5", 1048576: "-B6", 4194304: "-B7" }[BLOCK];
if (Bun.which("lz4") && bsFlag) {
  const dir = mkdtempSync(join(tmpdir(), "bench-codec-"));
  try {
    writeFileSync(join(dir, "heap.bin"), data);
    const t0 = performance.now();
    const r = Bun.spawnSync([
      "lz4",
      "-1",
      "-f",
      "-q",
      "-BI",
      bsFlag,
      "--no-frame-crc",
      join(dir, "heap.bin"),
      join(dir, "heap.lz4"),
    ]);
    const ms = performance.now() - t0;
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    const size = statSync(join(dir, "heap.lz4")).size;
    console.log(
      `ratio lz4 -1 ${bsFlag}:            ${(TOTAL / size).toFixed(3)}  (${size} bytes; native CLI file-to-file ${gbs(TOTAL, ms)})`
    );
    console.log(`size ours / lz4 -1: ${(compressed / size).toFixed(3)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
} else console.log("lz4 CLI not found (or block size not one lz4 offers): no ratio comparison");
