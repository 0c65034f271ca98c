// The one place that opens libc through bun:ffi. Everything else in src/ goes through src/sys.
// Only the functions something calls: dlopen compiles a trampoline for each symbol (TinyCC), about
// 5 us apiece at every start.
import { dlopen, FFIType } from "bun:ffi";

const { i32, i64, u64, ptr, cstring } = FFIType;

export const libc = dlopen("libc.so.6", {
  mmap: { args: [ptr, u64, i32, i32, i32, i64], returns: ptr },
  mprotect: { args: [ptr, u64, i32], returns: i32 },
  posix_spawn: { args: [ptr, cstring, ptr, ptr, ptr, ptr], returns: i32 },
  posix_spawn_file_actions_init: { args: [ptr], returns: i32 },
  posix_spawn_file_actions_adddup2: { args: [ptr, i32, i32], returns: i32 },
  posix_spawn_file_actions_destroy: { args: [ptr], returns: i32 },
  posix_spawnattr_init: { args: [ptr], returns: i32 },
  posix_spawnattr_setflags: { args: [ptr, i32], returns: i32 },
  posix_spawnattr_setsigdefault: { args: [ptr, ptr], returns: i32 },
  posix_spawnattr_setsigmask: { args: [ptr, ptr], returns: i32 },
  posix_spawnattr_setpgroup: { args: [ptr, i32], returns: i32 },
  posix_spawnattr_destroy: { args: [ptr], returns: i32 },
}).symbols;
