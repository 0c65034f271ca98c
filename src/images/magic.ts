// The image kinds criu-bun knows: crit's magic name -> magic number, header style, message
// schema, file name pattern and how raw payload follows entries. Facts from CRIU's
// criu/include/magic.h, criu/image-desc.c and crit (lib/pycriu/images/images.py).
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { pstree_entrySchema } from "./gen/pstree_pb";
import {
  core_entrySchema,
  task_kobj_ids_entrySchema,
  creds_entrySchema,
  sa_entrySchema,
  rlimit_entrySchema,
  itimer_entrySchema,
  posix_timer_entrySchema,
  siginfo_entrySchema,
  seccomp_entrySchema,
} from "./gen/core_pb";
import { inventory_entrySchema, stats_entrySchema, fs_entrySchema, cpuinfo_entrySchema } from "./gen/inventory_pb";
import { mm_entrySchema, vma_entrySchema, pagemap_headSchema, pagemap_entrySchema } from "./gen/mm_pb";
import {
  fdinfo_entrySchema,
  file_entrySchema,
  reg_file_entrySchema,
  pipe_entrySchema,
  fifo_entrySchema,
  pipe_data_entrySchema,
  eventfd_file_entrySchema,
  eventpoll_file_entrySchema,
  eventpoll_tfd_entrySchema,
  signalfd_entrySchema,
  timerfd_entrySchema,
  inotify_file_entrySchema,
  inotify_wd_entrySchema,
  fanotify_file_entrySchema,
  fanotify_mark_entrySchema,
  memfd_inode_entrySchema,
  ghost_file_entrySchema,
  ghost_chunk_entrySchema,
  remap_file_path_entrySchema,
  tty_file_entrySchema,
  tty_info_entrySchema,
  tty_data_entrySchema,
  file_lock_entrySchema,
  ext_file_entrySchema,
  tunfile_entrySchema,
  irmap_cache_entrySchema,
} from "./gen/files_pb";
import {
  unix_sk_entrySchema,
  inet_sk_entrySchema,
  tcp_stream_entrySchema,
  sk_packet_entrySchema,
  netlink_sk_entrySchema,
  packet_sock_entrySchema,
} from "./gen/sockets_pb";
import {
  ns_file_entrySchema,
  utsns_entrySchema,
  pidns_entrySchema,
  timens_entrySchema,
  userns_entrySchema,
  ipc_var_entrySchema,
  ipc_shm_entrySchema,
  ipc_sem_entrySchema,
  ipc_msg_entrySchema,
  mnt_entrySchema,
  net_device_entrySchema,
  netns_entrySchema,
} from "./gen/ns_pb";
import { cgroup_entrySchema } from "./gen/cgroup_pb";
import { bpfmap_file_entrySchema, bpfmap_data_entrySchema } from "./gen/files_pb";
import { autofs_entrySchema, binfmt_misc_entrySchema, apparmor_entrySchema } from "./gen/ns_pb";

export const IMG_COMMON_MAGIC = 0x54564319;
export const IMG_SERVICE_MAGIC = 0x55105940;

/** How raw bytes follow an entry. */
type PayloadKind =
  | "none"
  | "pipe" // pipe_data_entry.bytes raw bytes
  | "skq" // sk_packet_entry.length raw bytes
  | "tcp" // inq_len + outq_len raw bytes
  | "ghost" // ghost file contents (whole rest, or per ghost_chunk_entry)
  | "ipc_shm" // size bytes, padded to 4 (none when in_pagemaps)
  | "ipc_sem" // nsems u16, padded to 8
  | "ipc_msg" // qnum x (u32 len + ipc_msg + msize bytes padded to 8), kept raw
  | "bpfmap"; // keys_bytes + values_bytes raw bytes

type Header = "common" | "service" | "inventory" | "raw";

export interface ImageKind {
  name: string; // crit's magic name
  magic: number;
  header: Header;
  schema?: DescMessage; // entry schema (PAGEMAP: entries after the head)
  file: string; // CRIU's name pattern, e.g. "core-%u.img"
  payload: PayloadKind;
}

function kind<T extends DescMessage | undefined = undefined>(
  magic: number,
  file: string,
  schema?: T,
  payload: PayloadKind = "none",
  header: Header = "common"
) {
  return { magic, file, schema: schema as T, payload, header };
}

/**
 * The one table of image kinds, by crit's magic name: magic, CRIU's file name pattern, entry
 * schema, payload and header style. Reading and writing take a kind's name from here (KindName,
 * MessageKind) and its entries are typed by its schema (EntryOf), so a misspelled kind or an entry
 * of another message fails to compile.
 */
export const IMAGE_KINDS = {
  INVENTORY: kind(0x58313116, "inventory.img", inventory_entrySchema, "none", "inventory"),
  PSTREE: kind(0x50273030, "pstree.img", pstree_entrySchema),
  FDINFO: kind(0x56213732, "fdinfo-%u.img", fdinfo_entrySchema),
  PAGEMAP: kind(0x56084025, "pagemap-%lu.img", pagemap_entrySchema),
  CORE: kind(0x55053847, "core-%u.img", core_entrySchema),
  IDS: kind(0x54432030, "ids-%u.img", task_kobj_ids_entrySchema),
  VMAS: kind(0x54123737, "vmas-%u.img", vma_entrySchema),
  PIPES: kind(0x56513555, "pipes.img", pipe_entrySchema),
  PIPES_DATA: kind(0x56453709, "pipes-data.img", pipe_data_entrySchema, "pipe"),
  FIFO: kind(0x58364939, "fifo.img", fifo_entrySchema),
  FIFO_DATA: kind(0x59333054, "fifo-data.img", pipe_data_entrySchema, "pipe"),
  SIGACT: kind(0x55344201, "sigacts-%u.img", sa_entrySchema),
  UNIXSK: kind(0x54373943, "unixsk.img", unix_sk_entrySchema),
  INETSK: kind(0x56443851, "inetsk.img", inet_sk_entrySchema),
  PACKETSK: kind(0x60454618, "packetsk.img", packet_sock_entrySchema),
  ITIMERS: kind(0x57464056, "itimers-%u.img", itimer_entrySchema),
  POSIX_TIMERS: kind(0x52603957, "posix-timers-%u.img", posix_timer_entrySchema),
  SK_QUEUES: kind(0x56264026, "sk-queues.img", sk_packet_entrySchema, "skq"),
  UTSNS: kind(0x54473203, "utsns-%u.img", utsns_entrySchema),
  CREDS: kind(0x54023547, "creds-%u.img", creds_entrySchema),
  IPC_VAR: kind(0x53115007, "ipcns-var-%u.img", ipc_var_entrySchema),
  IPCNS_SHM: kind(0x46283044, "ipcns-shm-%u.img", ipc_shm_entrySchema, "ipc_shm"),
  IPCNS_MSG: kind(0x55453737, "ipcns-msg-%u.img", ipc_msg_entrySchema, "ipc_msg"),
  IPCNS_SEM: kind(0x59573019, "ipcns-sem-%u.img", ipc_sem_entrySchema, "ipc_sem"),
  REG_FILES: kind(0x50363636, "reg-files.img", reg_file_entrySchema),
  EXT_FILES: kind(0x59255641, "ext-files.img", ext_file_entrySchema),
  FS: kind(0x51403912, "fs-%u.img", fs_entrySchema),
  MM: kind(0x57492820, "mm-%u.img", mm_entrySchema),
  REMAP_FPATH: kind(0x59133954, "remap-fpath.img", remap_file_path_entrySchema),
  GHOST_FILE: kind(0x52583605, "ghost-file-%x.img", ghost_file_entrySchema, "ghost"),
  TCP_STREAM: kind(0x51465506, "tcp-stream-%x.img", tcp_stream_entrySchema, "tcp"),
  EVENTFD_FILE: kind(0x44523722, "eventfd.img", eventfd_file_entrySchema),
  EVENTPOLL_FILE: kind(0x45023858, "eventpoll.img", eventpoll_file_entrySchema),
  EVENTPOLL_TFD: kind(0x44433746, "eventpoll-tfd.img", eventpoll_tfd_entrySchema),
  SIGNALFD: kind(0x57323820, "signalfd.img", signalfd_entrySchema),
  INOTIFY_FILE: kind(0x48424431, "inotify.img", inotify_file_entrySchema),
  INOTIFY_WD: kind(0x54562009, "inotify-wd.img", inotify_wd_entrySchema),
  MNTS: kind(0x55563928, "mountpoints-%u.img", mnt_entrySchema),
  NETDEV: kind(0x57373951, "netdev-%u.img", net_device_entrySchema),
  NETNS: kind(0x55933752, "netns-%u.img", netns_entrySchema),
  TTY_FILES: kind(0x59433025, "tty.img", tty_file_entrySchema),
  TTY_INFO: kind(0x59453036, "tty-info.img", tty_info_entrySchema),
  TTY_DATA: kind(0x59413026, "tty-data.img", tty_data_entrySchema),
  FILE_LOCKS: kind(0x54323616, "filelocks.img", file_lock_entrySchema),
  RLIMIT: kind(0x57113925, "rlimit-%u.img", rlimit_entrySchema),
  FANOTIFY_FILE: kind(0x55096122, "fanotify.img", fanotify_file_entrySchema),
  FANOTIFY_MARK: kind(0x56506035, "fanotify-mark.img", fanotify_mark_entrySchema),
  SIGNAL: kind(0x59255647, "signal-s-%u.img", siginfo_entrySchema), // also signal-p-%u.img
  NETLINK_SK: kind(0x58005614, "netlinksk.img", netlink_sk_entrySchema),
  NS_FILES: kind(0x61394011, "ns-files.img", ns_file_entrySchema),
  TUNFILE: kind(0x57143751, "tunfile.img", tunfile_entrySchema),
  CGROUP: kind(0x59383330, "cgroup.img", cgroup_entrySchema),
  TIMERFD: kind(0x50493712, "timerfd.img", timerfd_entrySchema),
  CPUINFO: kind(0x61404013, "cpuinfo.img", cpuinfo_entrySchema),
  USERNS: kind(0x55474906, "userns-%u.img", userns_entrySchema),
  SECCOMP: kind(0x64413049, "seccomp.img", seccomp_entrySchema),
  FILES: kind(0x56303138, "files.img", file_entrySchema),
  MEMFD_INODE: kind(0x48453499, "memfd.img", memfd_inode_entrySchema),
  TIMENS: kind(0x43114433, "timens-%u.img", timens_entrySchema),
  PIDNS: kind(0x61157326, "pidns-%u.img", pidns_entrySchema),
  BINFMT_MISC: kind(0x67343323, "binfmt-misc.img", binfmt_misc_entrySchema), // also binfmt-misc-%u.img (older)
  AUTOFS: kind(0x49353943, "autofs-%u.img", autofs_entrySchema),
  BPFMAP_FILE: kind(0x57506142, "bpfmap-file.img", bpfmap_file_entrySchema),
  BPFMAP_DATA: kind(0x64324033, "bpfmap-data.img", bpfmap_data_entrySchema, "bpfmap"),
  APPARMOR: kind(0x59423047, "apparmor.img", apparmor_entrySchema),
  STATS: kind(0x57093306, "stats-%s", stats_entrySchema, "none", "service"),
  IRMAP_CACHE: kind(0x57004059, "irmap-cache.img", irmap_cache_entrySchema, "none", "service"),
  // Raw images: no magic, no entries (page contents, tarballs, ip/iptables/nft dumps, netlink).
  PAGES: kind(0, "pages-%u.img", undefined, "none", "raw"),
  IFADDR: kind(0, "ifaddr-%u.img", undefined, "none", "raw"),
  ROUTE: kind(0, "route-%u.img", undefined, "none", "raw"),
  ROUTE6: kind(0, "route6-%u.img", undefined, "none", "raw"),
  RULE: kind(0, "rule-%u.img", undefined, "none", "raw"),
  IPTABLES: kind(0, "iptables-%u.img", undefined, "none", "raw"),
  IP6TABLES: kind(0, "ip6tables-%u.img", undefined, "none", "raw"),
  NFTABLES: kind(0, "nftables-%u.img", undefined, "none", "raw"),
  TMPFS_IMG: kind(0, "tmpfs-%u.tar.gz.img", undefined, "none", "raw"),
  TMPFS_DEV: kind(0, "tmpfs-dev-%u.tar.gz.img", undefined, "none", "raw"),
  NETNF_CT: kind(0, "netns-ct-%u.img", undefined, "none", "raw"),
  NETNF_EXP: kind(0, "netns-exp-%u.img", undefined, "none", "raw"),
};

type KindName = keyof typeof IMAGE_KINDS;
type SchemaOf<N extends KindName> = (typeof IMAGE_KINDS)[N]["schema"];
/** the kinds whose entries are protobuf messages (every kind but the raw ones) */
export type MessageKind = { [N in KindName]: SchemaOf<N> extends DescMessage ? N : never }[KindName];
/** the message type of a kind's entries */
// PAGEMAP: a head, then entries; GHOST_FILE: a ghost_file_entry, then its chunks
export type EntryOf<N extends MessageKind> = N extends "PAGEMAP"
  ? MessageShape<typeof pagemap_headSchema> | MessageShape<typeof pagemap_entrySchema>
  : N extends "GHOST_FILE"
    ? MessageShape<typeof ghost_file_entrySchema> | MessageShape<typeof ghost_chunk_entrySchema>
    : SchemaOf<N> extends DescMessage
      ? MessageShape<SchemaOf<N>>
      : never;

const K: ImageKind[] = [];
export const KINDS: readonly ImageKind[] = K;
export const kindByName = new Map<string, ImageKind>();
export const kindByMagic = new Map<number, ImageKind>();
// one plain loop (Object.entries, map with spread, filter and the Maps from arrays took ~0.1 ms more
// of every dump's and restore's start in the interpreter)
for (const name in IMAGE_KINDS) {
  const k = IMAGE_KINDS[name as KindName];
  const ik: ImageKind = { name, magic: k.magic, file: k.file, schema: k.schema, payload: k.payload, header: k.header };
  K.push(ik);
  kindByName.set(name, ik);
  if (ik.header !== "raw") kindByMagic.set(ik.magic, ik);
}

/** The head message of PAGEMAP images (every later entry is a pagemap_entry). */
export const PAGEMAP_HEAD_SCHEMA = pagemap_headSchema;

/** The schema of entry `i` of an image of kind `k`: a pagemap's first entry is its head, a chunked
 *  ghost file's entries after the first are chunks; every other entry is of the kind's own schema. */
export function entrySchemaAt(k: ImageKind, i: number): DescMessage {
  if (k.name === "PAGEMAP" && i === 0) return PAGEMAP_HEAD_SCHEMA;
  if (k.name === "GHOST_FILE" && i > 0) return ghost_chunk_entrySchema;
  if (!k.schema) throw new Error(`image kind ${k.name} has no entries`);
  return k.schema;
}

/** CRIU-style file name: imageName("CORE", 42) -> "core-42.img" (%x ids in hex). */
export function imageName(kindName: string, id?: number | bigint | string): string {
  const k = kindByName.get(kindName);
  if (!k) throw new Error(`unknown image kind ${kindName}`);
  return k.file.replace(/%(lu|u|d|x|s)/, (_m, c) => (c === "x" ? BigInt(id ?? 0).toString(16) : String(id ?? "")));
}
