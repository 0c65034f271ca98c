// criu-bun page codec (AssemblyScript -> wasm/codec.wasm).
//
// All functions work on raw addresses in this module's linear memory; the TypeScript side
// (src/codec/codec.ts) owns the layout (hash table, input, output and flag buffers above
// heapBase()) and validates every offset/length before calling in. Nothing here allocates.
//
//   zeroScan(src, nPages, flags) -> number of zero pages; flags[i] = 1 if page i is all zero
//   isZero(src, len)             -> 1 if len bytes at src are all zero
//   lz4Compress(src, len, dst, dstCap, htab) -> compressed size, 0 if dst is too small,
//                                   -1 if len is larger than LZ4's maximum input
//   lz4Decompress(src, len, dst, dstCap) -> decompressed size, or a negative number
//                                   -(1 + offset in src where the input was found corrupt)
//   xxh32(src, len, seed) / xxh64(src, len, seed): the standard xxHash32 / XXH64 digests
//   xxh64Pages(src, nPages, flags, seed): XXH64 of the pages whose flag is 0, as if packed
//   packPages(src, nPages, flags, dst, va, runs, nRuns) -> runs; the pages whose flag is 0 moved
//                                   down to dst, packed, their runs (va, pages) appended at runs;
//                                   packedBytes holds the bytes packed
//
// LZ4: the LZ4 *block* format (no frame), greedy single-pass compressor in the style of
// lz4's default level ("fast", acceleration 1, same skip heuristic): 4-byte hashing into a table
// of 2^HASH_LOG u32 entries holding absolute addresses. Candidates are verified (in range, before the cursor,
// within the 64 KiB window, same 4 bytes), so the table never needs clearing between calls.
// Format rules respected: the last 5 bytes are literals, the last match starts at least
// 12 bytes before the end of the block. The decompressor checks every read against the end
// of src and every write against dst + dstCap, and rejects offsets that point before dst.
// Wild (16-byte) copies are used only where the slack is inside the same buffer; the compressor's
// literal copies may *read* up to 3 bytes past the end of src (never write), which is harmless
// inside linear memory (the caller places src below other buffers).

const PAGE: usize = 4096;

const MINMATCH: usize = 4;
const LASTLITERALS: usize = 5;
const MFLIMIT: usize = 12;
const MAX_DISTANCE: usize = 65535;
const ML_BITS: u32 = 4;
const ML_MASK: u32 = 15;
const RUN_MASK: u32 = 15;
const SKIP_TRIGGER: u32 = 6;
const LZ4_MAX_INPUT: usize = 0x7e000000;

/** log2 of the number of hash table entries (u32 each). 2^13 * 4 = 32 KiB. */
export const HASH_LOG: u32 = 13;
/** Size in bytes of the hash table the caller must provide to lz4Compress. */
export const HASH_TABLE_BYTES: u32 = (1 << HASH_LOG) * 4;

/** First free byte of linear memory (above static data and the stack). */
export function heapBase(): usize {
  return (__heap_base + 63) & ~(63 as usize);
}

// ---------------------------------------------------------------------------------------
// Zero pages

/** flags[i] = 1 when the 4 KiB page at src + i*4096 is all zero, else 0. Returns the count of zero pages. */
export function zeroScan(src: usize, nPages: u32, flags: usize): u32 {
  let zeros: u32 = 0;
  for (let i: u32 = 0; i < nPages; i++) {
    const p = src + (<usize>i) * PAGE;
    const z = pageIsZero(p);
    store<u8>(flags + i, z);
    zeros += z;
  }
  return zeros;
}

/** Bytes the last packPages() wrote at dst. */
export let packedBytes: u32 = 0;

/**
 * A dump block's kept pages packed: of the nPages pages at src (the pages of one segment, the
 * first at address va), those whose flag (flags[i]) is 0 are moved down to dst (dst <= src; runs
 * of them by memory.copy, none when already in place), and each run of them is appended to the
 * list of (va: f64, pages: f64) pairs at runs, which holds nRuns pairs: merged with the last one
 * when it ends where the run starts. Returns the new number of pairs; packedBytes = bytes
 * written at dst. (The same as the loop it replaced in src/codec/jobs.ts: one call per segment
 * instead of a typed-array call per run from JavaScript, which a page Worker interprets.)
 */
export function packPages(src: usize, nPages: u32, flags: usize, dst: usize, va: f64, runs: usize, nRuns: u32): u32 {
  let w: usize = 0;
  let k: u32 = 0;
  while (k < nPages) {
    if (load<u8>(flags + k) != 0) {
      k++;
      continue;
    }
    let e: u32 = k + 1;
    while (e < nPages && load<u8>(flags + e) == 0) e++;
    const from = src + (<usize>k) * PAGE;
    const len = (<usize>(e - k)) * PAGE;
    if (from != dst + w) memory.copy(dst + w, from, len);
    const rva = va + <f64>k * 4096.0;
    const n = <f64>(e - k);
    if (nRuns > 0) {
      const last = runs + (<usize>(nRuns - 1)) * 16;
      if (load<f64>(last) + load<f64>(last, 8) * 4096.0 == rva) {
        store<f64>(last, load<f64>(last, 8) + n, 8);
        w += len;
        k = e;
        continue;
      }
    }
    const at = runs + (<usize>nRuns) * 16;
    store<f64>(at, rva);
    store<f64>(at, n, 8);
    nRuns++;
    w += len;
    k = e;
  }
  packedBytes = <u32>w;
  return nRuns;
}

// @ts-ignore: decorator
@inline
function pageIsZero(p: usize): u32 {
  const end = p + PAGE;
  while (p < end) {
    // 128 bytes per step; most non-zero pages fail on the first step.
    let a = v128.or(v128.load(p), v128.load(p, 16));
    let b = v128.or(v128.load(p, 32), v128.load(p, 48));
    let c = v128.or(v128.load(p, 64), v128.load(p, 80));
    let d = v128.or(v128.load(p, 96), v128.load(p, 112));
    if (v128.any_true(v128.or(v128.or(a, b), v128.or(c, d)))) return 0;
    p += 128;
  }
  return 1;
}

/** 1 if the len bytes at src are all zero. */
export function isZero(src: usize, len: usize): u32 {
  let p = src;
  const end = src + len;
  while (p + 64 <= end) {
    const a = v128.or(v128.load(p), v128.load(p, 16));
    const b = v128.or(v128.load(p, 32), v128.load(p, 48));
    if (v128.any_true(v128.or(a, b))) return 0;
    p += 64;
  }
  while (p < end) {
    if (load<u8>(p) != 0) return 0;
    p++;
  }
  return 1;
}

// ---------------------------------------------------------------------------------------
// LZ4 block compression

/** Bytes hashed per position: 5 finds slightly longer matches than 4 on heap data, at the same speed. */
const HASH_BYTES: u64 = 5;

/** Multiplicative hash of the HASH_BYTES bytes at p (one 8-byte load; p + 8 stays inside the block). */
// @ts-ignore: decorator
@inline
function hashAt(p: usize): u32 {
  return hashOf(load<u64>(p));
}

/** The same hash of the 8 bytes already loaded from a position. */
// @ts-ignore: decorator
@inline
function hashOf(v: u64): u32 {
  return <u32>(((v << (64 - 8 * HASH_BYTES)) * 0x9e3779b185ebca87) >> (64 - HASH_LOG));
}

// @ts-ignore: decorator
@inline
function writeLength(op: usize, n: usize): usize {
  // n >= 15 already subtracted by the caller: emit 255s then the remainder.
  while (n >= 255) {
    store<u8>(op, 255);
    op++;
    n -= 255;
  }
  store<u8>(op, <u8>n);
  return op + 1;
}

/** Length of the common prefix of ip and ref, not reading at or past limit (from ip). */
// @ts-ignore: decorator
@inline
function countMatch(ip: usize, ref: usize, limit: usize): usize {
  const start = ip;
  if (ip + 8 <= limit) {
    // most matches are short: settle them with one 8-byte compare
    const diff = load<u64>(ip) ^ load<u64>(ref);
    if (diff != 0) return <usize>(ctz(diff) >> 3);
    ip += 8;
    ref += 8;
  }
  while (ip + 16 <= limit) {
    const eq = i8x16.bitmask(i8x16.eq(v128.load(ip), v128.load(ref)));
    if (eq != 0xffff) return ip - start + <usize>ctz(~eq);
    ip += 16;
    ref += 16;
  }
  while (ip + 8 <= limit) {
    const diff = load<u64>(ip) ^ load<u64>(ref);
    if (diff != 0) return ip - start + <usize>(ctz(diff) >> 3);
    ip += 8;
    ref += 8;
  }
  if (ip + 4 <= limit && load<u32>(ip) == load<u32>(ref)) {
    ip += 4;
    ref += 4;
  }
  if (ip + 2 <= limit && load<u16>(ip) == load<u16>(ref)) {
    ip += 2;
    ref += 2;
  }
  if (ip < limit && load<u8>(ip) == load<u8>(ref)) ip++;
  return ip - start;
}

/**
 * ref (a hash table entry) is a match for ip, whose first 8 bytes are seq: same first 4 bytes,
 * inside the input, before ip and within 64 KiB. Every table entry is an address inside linear
 * memory, so ref's bytes are compared first: on incompressible data that is the only test.
 */
// @ts-ignore: decorator
@inline
function isMatch(ref: usize, seq: u64, ip: usize, src: usize): bool {
  // ip - ref - 1 wraps around when ref >= ip, so one unsigned compare checks both ends of the window
  if (load<u32>(ref) != <u32>seq) return false;
  return ip - ref - 1 < MAX_DISTANCE && ref >= src;
}

/** Copy n bytes (non-overlapping, src before dst or far apart); 16-byte chunks when dst has slack up to limit. */
// @ts-ignore: decorator
@inline
function copyLiterals(dst: usize, src: usize, n: usize, limit: usize): void {
  if (dst + n + 16 <= limit) {
    const end = dst + n;
    while (dst < end) {
      v128.store(dst, v128.load(src));
      dst += 16;
      src += 16;
    }
  } else {
    memory.copy(dst, src, n);
  }
}

/**
 * Compress len bytes at src into dst (capacity dstCap) as one LZ4 block.
 * htab: HASH_TABLE_BYTES of scratch (contents may be stale; they are verified before use).
 * Returns the block size, 0 when dstCap is too small, -1 when len exceeds LZ4's limit.
 */
export function lz4Compress(src: usize, len: usize, dst: usize, dstCap: usize, htab: usize): i32 {
  if (len > LZ4_MAX_INPUT) return -1;
  const iend = src + len;
  const mflimit = iend - MFLIMIT; // last position where a match may start (inclusive)
  const matchlimit = iend - LASTLITERALS;
  const oend = dst + dstCap;
  let op = dst;
  let anchor = src;
  let ip = src;

  if (len >= MFLIMIT + 1) {
    store<u32>(htab + (<usize>hashAt(ip) << 2), <u32>ip);
    ip++;
    let forwardSeq = load<u64>(ip);

    let done = false;
    while (true) {
      // --- find a match
      let ref: usize = 0;
      {
        let forwardIp = ip;
        let step: u32 = 1;
        let searchNb: u32 = 1 << SKIP_TRIGGER;
        while (true) {
          // the bytes at ip were loaded by the step before: hash them, compare them with ref's
          const seq = forwardSeq;
          ip = forwardIp;
          forwardIp += step;
          step = searchNb++ >> SKIP_TRIGGER;
          if (forwardIp > mflimit + 1) {
            done = true;
            break;
          }
          const slot = htab + (<usize>hashOf(seq) << 2);
          ref = <usize>load<u32>(slot);
          forwardSeq = load<u64>(forwardIp);
          store<u32>(slot, <u32>ip);
          if (isMatch(ref, seq, ip, src)) break;
        }
      }
      if (done) break;
      // --- extend backwards
      while (ip > anchor && ref > src && load<u8>(ip - 1) == load<u8>(ref - 1)) {
        ip--;
        ref--;
      }
      // --- literals
      // the token's literal half, completed with the match length below
      let token = op++;
      let tokenHi: u32;
      {
        const litLen = ip - anchor;
        if (op + litLen + (2 + 1 + LASTLITERALS) + litLen / 255 > oend) return 0;
        if (litLen >= <usize>RUN_MASK) {
          tokenHi = RUN_MASK << ML_BITS;
          op = writeLength(op, litLen - RUN_MASK);
        } else {
          tokenHi = <u32>litLen << ML_BITS;
        }
        copyLiterals(op, anchor, litLen, oend);
        op += litLen;
      }
      // --- matches (loop while the position right after a match also matches)
      while (true) {
        store<u16>(op, <u16>(ip - ref));
        op += 2;
        const ml = countMatch(ip + MINMATCH, ref + MINMATCH, matchlimit);
        ip += MINMATCH + ml;
        // room for the length bytes, then the next token + offset and the final literals token
        const lenBytes = ml >= <usize>ML_MASK ? (ml - ML_MASK) / 255 + 1 : 0;
        if (op + lenBytes + 3 + LASTLITERALS > oend) return 0;
        if (ml >= <usize>ML_MASK) {
          store<u8>(token, <u8>(tokenHi | ML_MASK));
          op = writeLength(op, ml - ML_MASK);
        } else {
          store<u8>(token, <u8>(tokenHi | <u32>ml));
        }
        anchor = ip;
        if (ip > mflimit) {
          done = true;
          break;
        }
        // fill the table at ip-2, then test ip directly
        store<u32>(htab + (<usize>hashAt(ip - 2) << 2), <u32>(ip - 2));
        const seq = load<u64>(ip);
        const slot = htab + (<usize>hashOf(seq) << 2);
        ref = <usize>load<u32>(slot);
        store<u32>(slot, <u32>ip);
        if (isMatch(ref, seq, ip, src)) {
          token = op++;
          tokenHi = 0;
          continue;
        }
        forwardSeq = seq >> 8; // the bytes at ip + 1 (HASH_BYTES <= 7 of them are hashed)
        break;
      }
      if (done) break;
      ip++;
    }
  }
  // --- last literals
  const lastRun = iend - anchor;
  if (op + lastRun + 1 + (lastRun + 255 - RUN_MASK) / 255 > oend) return 0;
  if (lastRun >= <usize>RUN_MASK) {
    store<u8>(op, <u8>(RUN_MASK << ML_BITS));
    op = writeLength(op + 1, lastRun - RUN_MASK);
  } else {
    store<u8>(op, <u8>(lastRun << ML_BITS));
    op++;
  }
  memory.copy(op, anchor, lastRun);
  op += lastRun;
  return <i32>(op - dst);
}

// ---------------------------------------------------------------------------------------
// LZ4 block decompression (safe)

/**
 * Decompress the LZ4 block of len bytes at src into dst (capacity dstCap).
 * Returns the decompressed size, or -(1 + offset in src) of the first corrupt byte.
 */
export function lz4Decompress(src: usize, len: usize, dst: usize, dstCap: usize): i32 {
  const iend = src + len;
  const oend = dst + dstCap;
  let ip = src;
  let op = dst;
  if (len == 0) return -1;
  while (true) {
    if (ip >= iend) return -(1 + <i32>(ip - src));
    const token = <u32>load<u8>(ip);
    ip++;
    // fast path: short literals (and often a short match far enough back) with slack on both sides
    // for fixed 16/32-byte copies; ip + 32 <= iend also means this is not the last sequence
    if (token < 0xf0 && ip + 32 <= iend && op + 48 <= oend) {
      const ll = <usize>(token >> ML_BITS);
      v128.store(op, v128.load(ip));
      ip += ll;
      op += ll;
      const off = <usize>load<u16>(ip);
      const ml0 = <usize>(token & ML_MASK);
      if (ml0 != <usize>ML_MASK && off >= 8 && off <= op - dst) {
        ip += 2;
        const ref = op - off;
        if (off >= 16) {
          v128.store(op, v128.load(ref));
          v128.store(op, v128.load(ref, 16), 16); // reads bytes the first store wrote when off < 32: fine
        } else {
          // 8 <= off < 16: each 8-byte load reads only bytes written before it
          store<u64>(op, load<u64>(ref));
          store<u64>(op, load<u64>(ref, 8), 8);
          store<u64>(op, load<u64>(ref, 16), 16);
        }
        op += ml0 + MINMATCH;
        continue;
      }
    } else {
      // literals
      let litLen = <usize>(token >> ML_BITS);
      if (litLen == <usize>RUN_MASK) {
        let s: u32;
        do {
          if (ip >= iend) return -(1 + <i32>(ip - src));
          s = load<u8>(ip);
          ip++;
          litLen += s;
          if (litLen > len) return -(1 + <i32>(ip - src)); // longer than the input: corrupt (no overflow)
        } while (s == 255);
      }
      if (litLen > iend - ip || litLen > oend - op) return -(1 + <i32>(ip - src));
      if (ip + litLen + 16 <= iend) {
        copyLiterals(op, ip, litLen, oend); // reads stay inside src, writes inside dst
      } else {
        memory.copy(op, ip, litLen);
      }
      ip += litLen;
      op += litLen;
      if (ip == iend) break; // the last sequence holds literals only
    }
    // match
    if (iend - ip < 2) return -(1 + <i32>(ip - src));
    const offset = <usize>load<u16>(ip);
    if (offset == 0 || offset > op - dst) return -(1 + <i32>(ip - src));
    ip += 2;
    let ml = <usize>(token & ML_MASK);
    if (ml == <usize>ML_MASK) {
      let s: u32;
      do {
        if (ip >= iend) return -(1 + <i32>(ip - src));
        s = load<u8>(ip);
        ip++;
        ml += s;
        if (ml > oend - op) return -(1 + <i32>(ip - src));
      } while (s == 255);
    }
    ml += MINMATCH;
    if (ml > oend - op) return -(1 + <i32>(ip - src));
    let ref = op - offset;
    const mend = op + ml;
    if (mend + 16 <= oend) {
      // wild copies: may write up to 15 bytes past mend (still inside dst), never read unwritten bytes
      if (offset >= 16) {
        while (op < mend) {
          v128.store(op, v128.load(ref));
          op += 16;
          ref += 16;
        }
      } else {
        if (offset < 8) {
          // widen the distance to a multiple of offset that is >= 8 (same pattern), byte-copying that far
          let d = offset;
          while (d < 8) d += offset;
          const first = op + (d < ml ? d : ml);
          while (op < first) {
            store<u8>(op, load<u8>(ref));
            op++;
            ref++;
          }
          ref = op - d;
        }
        // distance >= 8: each 8-byte load reads only bytes already written
        while (op < mend) {
          store<u64>(op, load<u64>(ref));
          op += 8;
          ref += 8;
        }
      }
      op = mend;
    } else if (offset >= ml) {
      memory.copy(op, ref, ml); // no overlap
      op = mend;
    } else {
      while (op < mend) {
        store<u8>(op, load<u8>(ref));
        op++;
        ref++;
      }
    }
  }
  return <i32>(op - dst);
}

// ---------------------------------------------------------------------------------------
// xxHash

const P32_1: u32 = 2654435761;
const P32_2: u32 = 2246822519;
const P32_3: u32 = 3266489917;
const P32_4: u32 = 668265263;
const P32_5: u32 = 374761393;

// @ts-ignore: decorator
@inline
function r32(acc: u32, v: u32): u32 {
  return rotl<u32>(acc + v * P32_2, 13) * P32_1;
}

/** xxHash32 of len bytes at src. */
export function xxh32(src: usize, len: usize, seed: u32): u32 {
  let p = src;
  const end = src + len;
  let h: u32;
  if (len >= 16) {
    let v1 = seed + P32_1 + P32_2;
    let v2 = seed + P32_2;
    let v3 = seed;
    let v4 = seed - P32_1;
    const limit = end - 16;
    while (p <= limit) {
      v1 = r32(v1, load<u32>(p));
      v2 = r32(v2, load<u32>(p, 4));
      v3 = r32(v3, load<u32>(p, 8));
      v4 = r32(v4, load<u32>(p, 12));
      p += 16;
    }
    h = rotl<u32>(v1, 1) + rotl<u32>(v2, 7) + rotl<u32>(v3, 12) + rotl<u32>(v4, 18);
  } else {
    h = seed + P32_5;
  }
  h += <u32>len;
  while (p + 4 <= end) {
    h += load<u32>(p) * P32_3;
    h = rotl<u32>(h, 17) * P32_4;
    p += 4;
  }
  while (p < end) {
    h += (<u32>load<u8>(p)) * P32_5;
    h = rotl<u32>(h, 11) * P32_1;
    p++;
  }
  h ^= h >> 15;
  h *= P32_2;
  h ^= h >> 13;
  h *= P32_3;
  h ^= h >> 16;
  return h;
}

const P64_1: u64 = 0x9e3779b185ebca87;
const P64_2: u64 = 0xc2b2ae3d27d4eb4f;
const P64_3: u64 = 0x165667b19e3779f9;
const P64_4: u64 = 0x85ebca77c2b2ae63;
const P64_5: u64 = 0x27d4eb2f165667c5;

// @ts-ignore: decorator
@inline
function r64(acc: u64, v: u64): u64 {
  return rotl<u64>(acc + v * P64_2, 31) * P64_1;
}

// @ts-ignore: decorator
@inline
function merge64(h: u64, v: u64): u64 {
  h ^= r64(0, v);
  return h * P64_1 + P64_4;
}

/** XXH64 of len bytes at src. */
export function xxh64(src: usize, len: usize, seed: u64): u64 {
  let p = src;
  const end = src + len;
  let h: u64;
  if (len >= 32) {
    let v1 = seed + P64_1 + P64_2;
    let v2 = seed + P64_2;
    let v3 = seed;
    let v4 = seed - P64_1;
    const limit = end - 32;
    while (p <= limit) {
      v1 = r64(v1, load<u64>(p));
      v2 = r64(v2, load<u64>(p, 8));
      v3 = r64(v3, load<u64>(p, 16));
      v4 = r64(v4, load<u64>(p, 24));
      p += 32;
    }
    h = rotl<u64>(v1, 1) + rotl<u64>(v2, 7) + rotl<u64>(v3, 12) + rotl<u64>(v4, 18);
    h = merge64(h, v1);
    h = merge64(h, v2);
    h = merge64(h, v3);
    h = merge64(h, v4);
  } else {
    h = seed + P64_5;
  }
  h += <u64>len;
  while (p + 8 <= end) {
    h ^= r64(0, load<u64>(p));
    h = rotl<u64>(h, 27) * P64_1 + P64_4;
    p += 8;
  }
  if (p + 4 <= end) {
    h ^= (<u64>load<u32>(p)) * P64_1;
    h = rotl<u64>(h, 23) * P64_2 + P64_3;
    p += 4;
  }
  while (p < end) {
    h ^= (<u64>load<u8>(p)) * P64_5;
    h = rotl<u64>(h, 11) * P64_1;
    p++;
  }
  h ^= h >> 33;
  h *= P64_2;
  h ^= h >> 29;
  h *= P64_3;
  h ^= h >> 32;
  return h;
}

/**
 * XXH64 of the concatenation of the 4 KiB pages at src + i*4096 (i < nPages) whose flags[i] is 0,
 * in order: the digest xxh64() gives for those pages packed together, without packing them.
 */
export function xxh64Pages(src: usize, nPages: u32, flags: usize, seed: u64): u64 {
  let v1 = seed + P64_1 + P64_2;
  let v2 = seed + P64_2;
  let v3 = seed;
  let v4 = seed - P64_1;
  let total: u64 = 0;
  for (let i: u32 = 0; i < nPages; i++) {
    if (load<u8>(flags + i) != 0) continue;
    let p = src + (<usize>i) * PAGE;
    const end = p + PAGE;
    while (p < end) {
      v1 = r64(v1, load<u64>(p));
      v2 = r64(v2, load<u64>(p, 8));
      v3 = r64(v3, load<u64>(p, 16));
      v4 = r64(v4, load<u64>(p, 24));
      p += 32;
    }
    total += <u64>PAGE;
  }
  let h: u64;
  if (total > 0) {
    h = rotl<u64>(v1, 1) + rotl<u64>(v2, 7) + rotl<u64>(v3, 12) + rotl<u64>(v4, 18);
    h = merge64(h, v1);
    h = merge64(h, v2);
    h = merge64(h, v3);
    h = merge64(h, v4);
  } else {
    h = seed + P64_5;
  }
  h += total;
  h ^= h >> 33;
  h *= P64_2;
  h ^= h >> 29;
  h *= P64_3;
  h ^= h >> 32;
  return h;
}
