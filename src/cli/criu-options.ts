// CRIU 4.2's command-line option table as data (criu/config.c: 85 long options, the short
// letters "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:"), read by the CLI parser (src/cli/getopt.ts), the
// config-file reader and the RPC request mapping, so all three agree on names and argument kinds.
//
// Keep this module free of imports: `criu-bun --version` and the parser load it before anything else.

/** getopt_long's has_arg: none (flag), required (`--x V`, `--x=V`, `-xV`, `-x V`), optional (`--x=V`, `-xV` only). */
type ArgKind = "none" | "required" | "optional";

/**
 * What criu-bun does with an option:
 * - "yes": implemented, means what criu's man page says;
 * - "noop": accepted, criu-bun's behaviour already is what the option asks for (see `note`);
 * - "no": accepted by the parser, refused with one line where a command would use it
 *   ("--stream: not supported by criu-bun yet").
 */
type Support = "yes" | "noop" | "no";

/** criu's commands (plus criu-bun's `show`). */
export type Command =
  | "dump"
  | "pre-dump"
  | "restore"
  | "check"
  | "page-server"
  | "service"
  | "swrk"
  | "lazy-pages"
  | "dedup"
  | "cpuinfo"
  | "show"
  | "install"
  | "migrate";

export interface CriuOption {
  /** long name, without dashes */
  name: string;
  /** short letter, if criu has one */
  short?: string;
  arg: ArgKind;
  /** criu's BOOL_OPT: a --no-NAME form exists and sets the same field to false */
  negatable?: boolean;
  /** key in the parsed options object (camelCase; options sharing a field share a key) */
  key: string;
  /** the option may be given several times; values are collected in order (string[]) */
  repeat?: boolean;
  /** accepted values for an argument, when criu checks them at parse time */
  values?: readonly string[];
  /** commands in which criu uses the option (elsewhere criu ignores it, and so does criu-bun) */
  commands: readonly Command[];
  support: Support;
  /** the field of rpc.proto's criu_opts that carries the same setting, if any */
  rpc?: string;
  /** what it means (criu's man page, in short) */
  meaning: string;
  /** for "noop" and partly supported options: what criu-bun does */
  note?: string;
}

const DR: readonly Command[] = ["dump", "pre-dump", "restore"];
const D: readonly Command[] = ["dump", "pre-dump"];
const R: readonly Command[] = ["restore"];
const DRD: readonly Command[] = ["dump", "restore"];
const ALL: readonly Command[] = [
  "dump",
  "pre-dump",
  "restore",
  "check",
  "page-server",
  "service",
  "swrk",
  "lazy-pages",
  "dedup",
  "cpuinfo",
  "show",
  "migrate",
];

/** criu's cgroup modes for --manage-cgroups (bare --manage-cgroups means soft). */
export const CGROUP_MODES = ["none", "props", "soft", "full", "strict", "ignore"] as const;
export const NETWORK_LOCK_METHODS = ["iptables", "nftables", "skip", "none"] as const;

export const CRIU_OPTIONS: readonly CriuOption[] = [
  {
    name: "tree",
    short: "t",
    arg: "required",
    key: "tree",
    commands: ["dump", "pre-dump", "restore", "migrate"],
    support: "yes",
    rpc: "pid",
    meaning: "checkpoint the process tree rooted at PID (with restore: obsolete, ignored)",
  },
  {
    name: "leave-stopped",
    short: "s",
    arg: "none",
    key: "leaveStopped",
    commands: DRD,
    support: "yes",
    rpc: "leave_stopped",
    meaning: "leave the tasks stopped after dump or restore",
  },
  {
    name: "leave-running",
    short: "R",
    arg: "none",
    key: "leaveRunning",
    commands: ["dump"],
    support: "yes",
    rpc: "leave_running",
    meaning: "leave the tasks running after dump",
  },
  {
    name: "restore-detached",
    short: "d",
    arg: "none",
    negatable: true,
    key: "restoreDetached",
    commands: ["restore", "page-server", "lazy-pages", "service"],
    support: "yes",
    meaning: "detach from the restored tree (restore); run in the background (page-server, service)",
  },
  {
    name: "restore-sibling",
    short: "S",
    arg: "none",
    negatable: true,
    key: "restoreSibling",
    commands: R,
    support: "yes",
    rpc: "rst_sibling",
    meaning: "restore the root task as a sibling of criu (only with --restore-detached)",
  },
  {
    name: "daemon",
    arg: "none",
    negatable: true,
    key: "restoreDetached",
    commands: ["restore", "page-server", "lazy-pages", "service"],
    support: "yes",
    meaning: "same field as --restore-detached: run in the background after creating the socket (page-server, service)",
  },
  {
    name: "images-dir",
    short: "D",
    arg: "required",
    key: "imagesDir",
    commands: ALL,
    support: "yes",
    rpc: "images_dir_fd",
    meaning: "directory for image files (default: current directory)",
  },
  {
    name: "work-dir",
    short: "W",
    arg: "required",
    key: "workDir",
    commands: ALL,
    support: "yes",
    rpc: "work_dir_fd",
    meaning: "directory for logs, pidfiles and stats (default: the images directory)",
  },
  {
    name: "log-file",
    short: "o",
    arg: "required",
    key: "logFile",
    commands: ALL,
    support: "yes",
    rpc: "log_file",
    meaning: "log to FILE (relative to the work dir); the console stays quiet",
  },
  {
    name: "join-ns",
    short: "J",
    arg: "required",
    repeat: true,
    key: "joinNs",
    commands: R,
    support: "no",
    rpc: "join_ns",
    meaning: "join an existing namespace NS:{PID|NS_FILE}[,OPTIONS] and restore the tree in it",
  },
  {
    name: "root",
    short: "r",
    arg: "required",
    key: "root",
    commands: DR,
    support: "yes",
    rpc: "root",
    meaning: "change the root filesystem (when run in a mount namespace)",
    note: "restore: the saved mount namespace's root is put on DIR (default: the directory it was a bind of, if visible)",
  },
  {
    name: "ext-unix-sk",
    short: "x",
    arg: "optional",
    repeat: true,
    key: "extUnixSk",
    commands: DR,
    support: "yes",
    rpc: "ext_unix_sk",
    meaning: "allow external unix sockets (optionally only the listed inodes: --ext-unix-sk=INO[,INO])",
    note: "a list of inodes is refused; the bare form is implemented",
  },
  { name: "help", short: "h", arg: "none", key: "help", commands: ALL, support: "yes", meaning: "show the usage text" },
  {
    name: "tcp-established",
    arg: "none",
    negatable: true,
    key: "tcpEstablished",
    commands: [...DR, "migrate"],
    support: "yes",
    rpc: "tcp_established",
    meaning: "checkpoint and restore established TCP connections",
  },
  {
    name: "close",
    arg: "required",
    repeat: true,
    key: "close",
    commands: ALL,
    support: "yes",
    meaning: "close file descriptor FD before doing anything else",
  },
  {
    name: "log-pid",
    arg: "none",
    negatable: true,
    key: "logPid",
    commands: ALL,
    support: "noop",
    meaning: "each criu process forked for a restored task logs to FILE.PID instead of FILE",
    note: "criu-bun forks no helper processes: everything goes to the one log file",
  },
  {
    name: "version",
    short: "V",
    arg: "none",
    key: "version",
    commands: ALL,
    support: "yes",
    meaning: "print the version and exit",
  },
  {
    name: "evasive-devices",
    arg: "none",
    negatable: true,
    key: "evasiveDevices",
    commands: DR,
    support: "noop",
    rpc: "evasive_devices",
    meaning: "use any path to a device file if the original one is inaccessible",
    note: "criu-bun opens a device file by its dumped path; when that path is gone the restore fails naming it (no other path to the device is looked for)",
  },
  {
    name: "pidfile",
    arg: "required",
    key: "pidfile",
    commands: ["restore", "page-server", "service", "lazy-pages"],
    support: "yes",
    meaning: "write the root task's, service's or page server's PID to FILE",
  },
  {
    name: "veth-pair",
    arg: "required",
    repeat: true,
    key: "vethPair",
    commands: R,
    support: "no",
    rpc: "veths",
    meaning: "IN=OUT: name the host end of a restored veth pair",
  },
  {
    name: "action-script",
    arg: "required",
    repeat: true,
    key: "actionScript",
    commands: ["dump", "pre-dump", "restore", "page-server"],
    support: "yes",
    rpc: "notify_scripts",
    meaning: "run SCRIPT at each action (CRTOOLS_SCRIPT_ACTION) of dump and restore",
  },
  {
    name: "link-remap",
    arg: "none",
    negatable: true,
    key: "linkRemap",
    commands: DR,
    support: "yes",
    rpc: "link_remap",
    meaning: "allow linking unlinked files back when possible",
    note: "a deleted file that still has another hard link is linked back as link_remap.N beside its old name (without it such a file is refused); other deleted files are ghost files either way",
  },
  {
    name: "shell-job",
    short: "j",
    arg: "none",
    negatable: true,
    key: "shellJob",
    commands: DR,
    support: "yes",
    rpc: "shell_job",
    meaning: "allow dumping and restoring a shell job (controlling terminal outside the tree)",
  },
  {
    name: "file-locks",
    short: "l",
    arg: "none",
    negatable: true,
    key: "fileLocks",
    commands: DR,
    support: "yes",
    rpc: "file_locks",
    meaning: "dump and restore file locks",
  },
  {
    name: "page-server",
    arg: "none",
    negatable: true,
    key: "pageServer",
    commands: [...D, "lazy-pages"],
    support: "yes",
    rpc: "ps",
    meaning: "send pages to the page server at --address/--port (lazy-pages: take them from the dump there)",
  },
  {
    name: "address",
    arg: "required",
    key: "address",
    commands: ["dump", "pre-dump", "page-server", "lazy-pages", "service", "migrate"],
    support: "yes",
    rpc: "ps.address",
    meaning: "address of the page server or service",
  },
  {
    name: "port",
    arg: "required",
    key: "port",
    commands: ["dump", "pre-dump", "page-server", "lazy-pages"],
    support: "yes",
    rpc: "ps.port",
    meaning: "port of the page server",
  },
  {
    name: "prev-images-dir",
    arg: "required",
    key: "prevImagesDir",
    commands: [...D, "page-server"],
    support: "yes",
    rpc: "parent_img",
    meaning:
      "images of a previous (pre-)dump, relative to -D; only changed pages are written (page-server: where the parent link of -D points)",
  },
  {
    name: "ms",
    arg: "none",
    key: "ms",
    commands: ALL,
    support: "yes",
    meaning: "removed option (criu: deprecated, fails; use check's options)",
  },
  {
    name: "track-mem",
    arg: "none",
    negatable: true,
    key: "trackMem",
    commands: D,
    support: "noop",
    rpc: "track_mem",
    meaning: "track memory changes for the next incremental dump",
    note: "criu-bun finds changed pages by comparing against --prev-images-dir",
  },
  {
    name: "auto-dedup",
    arg: "none",
    negatable: true,
    key: "autoDedup",
    commands: DR,
    support: "no",
    rpc: "auto_dedup",
    meaning: "deduplicate pages against the parent images on dump; punch restored pages on restore",
  },
  {
    name: "libdir",
    short: "L",
    arg: "required",
    key: "libdir",
    commands: ALL,
    support: "no",
    meaning: "directory of criu plugins",
  },
  {
    name: "cpu-cap",
    arg: "optional",
    key: "cpuCap",
    commands: ["dump", "restore", "cpuinfo"],
    support: "no",
    rpc: "cpu_cap",
    meaning: "CPU capabilities to write/check: comma-separated cpu, fpu, all, ins, none, ^CAP to clear",
  },
  {
    name: "force-irmap",
    arg: "none",
    negatable: true,
    key: "forceIrmap",
    commands: D,
    support: "noop",
    rpc: "force_irmap",
    meaning: "force resolving names for inotify/fsnotify watches",
    note: "criu-bun always resolves each watch to its path at dump (open_by_handle_at on a mount of its device)",
  },
  {
    name: "ext-mount-map",
    short: "M",
    arg: "required",
    repeat: true,
    key: "extMountMap",
    commands: DR,
    support: "yes",
    rpc: "ext_mnt",
    meaning: "KEY:VALUE map of external mounts, or 'auto'",
    note: "dump: MOUNTPOINT:KEY; restore: KEY:PATH; auto at dump keys what is visible here by its path, at restore binds an unmapped key from that path",
  },
  {
    name: "exec-cmd",
    arg: "none",
    key: "execCmd",
    commands: R,
    support: "yes",
    rpc: "exec_cmd",
    meaning: "after restore, execute the command given after '--' as the parent of the restored tree",
  },
  {
    name: "manage-cgroups",
    arg: "optional",
    key: "manageCgroups",
    values: CGROUP_MODES,
    commands: DR,
    support: "yes",
    rpc: "manage_cgroups_mode",
    meaning: "dump/restore cgroups: none, props, soft (default, also the bare form), full, strict, ignore",
    note: "criu-bun saves membership, not properties: soft (criu's default: missing cgroups are created), none (they must exist) and ignore (tasks stay where restore runs) are honoured; props, full and strict are refused",
  },
  {
    name: "cgroup-root",
    arg: "required",
    repeat: true,
    key: "cgroupRoot",
    commands: DR,
    support: "yes",
    rpc: "cg_root",
    meaning: "[controller:]/newroot: change the root cgroup of a controller",
    note: "restore: the tree's cgroups move from under the root process's cgroup to under newroot (one controller, or every one without a name); dump: criu walks that root for cgroup properties, which criu-bun does not save (membership only), so it changes nothing there",
  },
  {
    name: "inherit-fd",
    arg: "required",
    repeat: true,
    key: "inheritFd",
    commands: R,
    support: "yes",
    rpc: "inherit_fd",
    meaning: "fd[NUM]:RES: give the restored tree criu's fd NUM in place of the resource RES",
    note: "RES: pipe:[INODE] (other resources are refused)",
  },
  {
    name: "feature",
    arg: "required",
    repeat: true,
    key: "feature",
    commands: ["check"],
    support: "yes",
    meaning: "check only the named kernel feature ('list' prints the names)",
  },
  {
    name: "skip-mnt",
    arg: "required",
    repeat: true,
    key: "skipMnt",
    commands: D,
    support: "no",
    rpc: "skip_mnt",
    meaning: "ignore this mount point when dumping the mount namespace",
  },
  {
    name: "enable-fs",
    arg: "required",
    repeat: true,
    key: "enableFs",
    commands: DR,
    support: "no",
    rpc: "enable_fs",
    meaning: "comma-separated file systems (or 'all') to dump/restore even if unsupported",
  },
  {
    name: "enable-external-sharing",
    arg: "none",
    key: "enableExternalSharing",
    commands: DR,
    support: "no",
    rpc: "ext_sharing",
    meaning: "allow external shared mounts",
  },
  {
    name: "enable-external-masters",
    arg: "none",
    key: "enableExternalMasters",
    commands: DR,
    support: "no",
    rpc: "ext_masters",
    meaning: "allow mounts with external masters",
  },
  {
    name: "freeze-cgroup",
    arg: "required",
    key: "freezeCgroup",
    commands: D,
    support: "yes",
    rpc: "freeze_cgroup",
    meaning: "use this cgroup's freezer to stop the tree",
  },
  {
    name: "ghost-limit",
    arg: "required",
    key: "ghostLimit",
    commands: D,
    support: "yes",
    rpc: "ghost_limit",
    meaning: "largest deleted file kept in the images (bytes, K, M or G)",
  },
  {
    name: "irmap-scan-path",
    arg: "required",
    repeat: true,
    key: "irmapScanPath",
    commands: D,
    support: "noop",
    rpc: "irmap_scan_paths",
    meaning: "add a path the inotify irmap scans",
    note: "criu-bun resolves watches by their file handles, with no scan",
  },
  {
    name: "lsm-profile",
    arg: "required",
    key: "lsmProfile",
    commands: R,
    support: "no",
    rpc: "lsm_profile",
    meaning: "TYPE:NAME LSM profile (apparmor or selinux) to use on restore",
  },
  {
    name: "timeout",
    arg: "required",
    key: "timeout",
    commands: [...D, "migrate", "lazy-pages"],
    support: "yes",
    rpc: "timeout",
    meaning: "give up freezing the tree after N seconds (default 10)",
  },
  {
    name: "external",
    arg: "required",
    repeat: true,
    key: "external",
    commands: DR,
    support: "yes",
    rpc: "external",
    note: "only mnt[KEY]:VALUE; other kinds are refused",
    meaning: "treat this resource as external (tty[..], file[..], dev[..], unix[..], mnt[..], veth[..], ...)",
  },
  {
    name: "empty-ns",
    arg: "required",
    key: "emptyNs",
    values: ["net"],
    commands: R,
    support: "yes",
    rpc: "empty_ns",
    meaning: "create the namespace (only 'net') but do not restore its contents",
  },
  {
    name: "lazy-pages",
    arg: "none",
    key: "lazyPages",
    commands: ["dump", "restore"],
    support: "yes",
    rpc: "lazy_pages",
    meaning:
      "dump: serve private anonymous memory from the frozen tree on --address/--port; restore: take it on demand through userfaultfd (with lazy-pages)",
  },
  {
    name: "extra",
    arg: "none",
    negatable: true,
    key: "extra",
    commands: ["check"],
    support: "yes",
    meaning: "check: also the extra kernel features",
  },
  {
    name: "experimental",
    arg: "none",
    negatable: true,
    key: "experimental",
    commands: ["check"],
    support: "yes",
    meaning: "check: also the experimental kernel features",
  },
  {
    name: "all",
    arg: "none",
    key: "all",
    commands: ["check"],
    support: "yes",
    meaning: "check: same as --extra --experimental",
  },
  {
    name: "cgroup-props",
    arg: "required",
    key: "cgroupProps",
    commands: D,
    support: "no",
    rpc: "cgroup_props",
    meaning: "cgroup controllers and properties to checkpoint (simplified YAML)",
  },
  {
    name: "cgroup-props-file",
    arg: "required",
    key: "cgroupPropsFile",
    commands: D,
    support: "no",
    rpc: "cgroup_props_file",
    meaning: "same as --cgroup-props, read from FILE",
  },
  {
    name: "cgroup-dump-controller",
    arg: "required",
    repeat: true,
    key: "cgroupDumpController",
    commands: D,
    support: "no",
    rpc: "cgroup_dump_controller",
    meaning: "dump only this cgroup controller",
  },
  {
    name: "skip-in-flight",
    arg: "none",
    negatable: true,
    key: "skipInFlight",
    commands: D,
    support: "yes",
    rpc: "tcp_skip_in_flight",
    meaning: "skip TCP connections not yet accepted",
  },
  {
    name: "deprecated",
    arg: "none",
    negatable: true,
    key: "deprecated",
    commands: ALL,
    support: "noop",
    meaning: "allow deprecated functionality",
    note: "criu-bun has no deprecated functionality",
  },
  {
    name: "display-stats",
    arg: "none",
    negatable: true,
    key: "displayStats",
    commands: DR,
    support: "yes",
    rpc: "display_stats",
    meaning: "print dump/restore statistics",
  },
  {
    name: "weak-sysctls",
    arg: "none",
    negatable: true,
    key: "weakSysctls",
    commands: R,
    support: "noop",
    rpc: "weak_sysctls",
    meaning: "skip restoring sysctls that do not exist",
    note: "criu-bun restores no sysctl that could be missing",
  },
  {
    name: "status-fd",
    arg: "required",
    key: "statusFd",
    commands: ["page-server", "lazy-pages", "service", "dump"],
    support: "yes",
    rpc: "status_fd",
    meaning: "write \\0 to FD and close it once ready to serve requests (dump: with --lazy-pages, once it serves them)",
  },
  {
    name: "tcp-close",
    arg: "none",
    negatable: true,
    key: "tcpClose",
    commands: DR,
    support: "yes",
    rpc: "tcp_close",
    meaning: "do not dump the state of established TCP connections; restore them closed",
  },
  {
    name: "verbosity",
    short: "v",
    arg: "optional",
    key: "verbosity",
    commands: ALL,
    support: "yes",
    rpc: "log_level",
    meaning: "-v adds one level, -vv two, -vN or --verbosity=N sets level N (0..4; default 2)",
  },
  {
    name: "ps-socket",
    arg: "required",
    key: "psSocket",
    commands: ["dump", "pre-dump", "page-server"],
    support: "no",
    meaning: "use the connected socket FD for the page server",
  },
  {
    name: "stream",
    arg: "none",
    negatable: true,
    key: "stream",
    commands: DR,
    support: "no",
    meaning: "dump/restore images through criu-image-streamer",
  },
  {
    name: "config",
    arg: "required",
    key: "config",
    commands: ALL,
    support: "yes",
    rpc: "config_file",
    meaning: "read options from FILE (default config files are skipped)",
  },
  {
    name: "no-default-config",
    arg: "none",
    key: "noDefaultConfig",
    commands: ALL,
    support: "yes",
    meaning: "do not read /etc/criu/default.conf and ~/.criu/default.conf",
  },
  {
    name: "tls-cacert",
    arg: "required",
    key: "tlsCacert",
    commands: ["dump", "pre-dump", "page-server", "lazy-pages"],
    support: "no",
    rpc: "tls_cacert",
    meaning: "trust only certificates signed by this CA",
  },
  {
    name: "tls-cacrl",
    arg: "required",
    key: "tlsCacrl",
    commands: ["dump", "pre-dump", "page-server", "lazy-pages"],
    support: "no",
    rpc: "tls_cacrl",
    meaning: "CA certificate revocation list",
  },
  {
    name: "tls-cert",
    arg: "required",
    key: "tlsCert",
    commands: ["dump", "pre-dump", "page-server", "lazy-pages"],
    support: "no",
    rpc: "tls_cert",
    meaning: "TLS certificate file",
  },
  {
    name: "tls-key",
    arg: "required",
    key: "tlsKey",
    commands: ["dump", "pre-dump", "page-server", "lazy-pages"],
    support: "no",
    rpc: "tls_key",
    meaning: "TLS private key file",
  },
  {
    name: "tls",
    arg: "none",
    negatable: true,
    key: "tls",
    commands: ["dump", "pre-dump", "page-server", "lazy-pages"],
    support: "no",
    rpc: "tls",
    meaning: "secure the page server connection with TLS",
  },
  {
    name: "tls-no-cn-verify",
    arg: "none",
    key: "tlsNoCnVerify",
    commands: ["dump", "pre-dump", "page-server", "lazy-pages"],
    support: "no",
    rpc: "tls_no_cn_verify",
    meaning: "do not verify the common name of the server certificate",
  },
  {
    name: "cgroup-yard",
    arg: "required",
    key: "cgroupYard",
    commands: DR,
    support: "no",
    rpc: "cgroup_yard",
    meaning: "use this directory of already mounted cgroup controllers",
  },
  {
    name: "pre-dump-mode",
    arg: "required",
    key: "preDumpMode",
    values: ["splice", "read"],
    commands: ["pre-dump"],
    support: "noop",
    rpc: "pre_dump_mode",
    meaning: "splice (parasite, default) or read (process_vm_readv)",
    note: "criu-bun always reads memory from outside the task (as 'read')",
  },
  {
    name: "file-validation",
    arg: "required",
    key: "fileValidation",
    values: ["filesize", "buildid"],
    commands: R,
    support: "no",
    meaning: "how restore checks that files are the dumped ones: filesize or buildid (default)",
  },
  {
    name: "skip-file-rwx-check",
    arg: "none",
    negatable: true,
    key: "skipFileRwxCheck",
    commands: R,
    support: "no",
    rpc: "skip_file_rwx_check",
    meaning: "do not check file permissions (r/w/x for u/g/o) on restore",
  },
  {
    name: "lsm-mount-context",
    arg: "required",
    key: "lsmMountContext",
    commands: R,
    support: "no",
    rpc: "lsm_mount_context",
    meaning: "replace the mount context of mounts that have one with CTX",
  },
  {
    name: "network-lock",
    arg: "required",
    key: "networkLock",
    values: NETWORK_LOCK_METHODS,
    commands: D,
    support: "yes",
    rpc: "network_lock",
    meaning: "how to lock the network while dumping: iptables (criu's default), nftables, skip (or none)",
    note: "criu-bun locks with nftables over netlink: nftables is honoured (and is criu-bun's default); skip/none takes no lock (inventory network_lock_method 2, and restore then unlocks nothing, as criu); iptables is refused",
  },
  {
    name: "mntns-compat-mode",
    arg: "none",
    negatable: true,
    key: "mntnsCompatMode",
    commands: R,
    support: "noop",
    rpc: "mntns_compat_mode",
    meaning: "use the older mount engine on restore",
    note: "criu-bun restores no mount namespace with either engine",
  },
  {
    name: "unprivileged",
    arg: "none",
    negatable: true,
    key: "unprivileged",
    commands: ["dump", "pre-dump", "restore", "check"],
    support: "no",
    rpc: "unprivileged",
    meaning: "accept the limits of running as non-root (with CAP_CHECKPOINT_RESTORE)",
  },
  {
    name: "ghost-fiemap",
    arg: "none",
    negatable: true,
    key: "ghostFiemap",
    commands: D,
    support: "noop",
    meaning: "dump deleted files' contents with fiemap (only their data extents)",
    note: "criu-bun always saves only the data extents of a deleted file (SEEK_DATA/SEEK_HOLE), with or without it",
  },
  {
    name: "allow-uprobes",
    arg: "none",
    negatable: true,
    key: "allowUprobes",
    commands: DR,
    support: "no",
    meaning: "allow dumping and restoring a [uprobes] VMA",
  },
];

/** criu's short option string, "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:", derived from the table. */
export const CRIU_SHORT_OPTS = "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:";

/**
 * criu-bun's own options (not in CRIU): same shape, parsed the same way. --compress keeps pages
 * as LZ4 blocks; --dir is show's directory summary.
 */
export const CRIU_BUN_OPTIONS: readonly CriuOption[] = [
  {
    name: "compress",
    arg: "none",
    negatable: true,
    key: "compress",
    commands: ["dump", "pre-dump"],
    support: "yes",
    meaning: "store pages as LZ4 blocks (pages-N.lz4; criu-bun extension)",
  },
  {
    name: "dir",
    arg: "required",
    key: "dir",
    commands: ["show"],
    support: "yes",
    meaning: "show: summarize an images directory",
  },
  {
    name: "as-criu",
    arg: "none",
    key: "asCriu",
    commands: ["install"],
    support: "yes",
    meaning: "install: make criu-bun the criu command (a symlink named criu)",
  },
  {
    name: "prefix",
    arg: "required",
    key: "prefix",
    commands: ["install"],
    support: "yes",
    meaning: "install: directory for the criu symlink (default /usr/local/sbin)",
  },
  {
    name: "post-copy",
    arg: "none",
    negatable: true,
    key: "postCopy",
    commands: ["migrate"],
    support: "yes",
    meaning:
      "migrate: the tree runs on the destination as soon as its state is restored, its memory copied in after by a lazy-pages daemon: pre-copied pages from the received images, the last round's from the frozen source (the default); --no-post-copy on either side: the final round sends every dirty page while frozen, and with --listen the restore writes every page first (criu-bun extension)",
  },
  {
    name: "listen",
    arg: "required",
    key: "listen",
    commands: ["migrate"],
    support: "yes",
    meaning: "migrate: receive a migrating tree on this TCP port and restore it (criu-bun extension)",
  },
  {
    name: "to",
    arg: "required",
    key: "to",
    commands: ["migrate"],
    support: "yes",
    meaning: "migrate: send the tree -t PID live to the criu-bun listening at HOST:PORT (criu-bun extension)",
  },
  {
    name: "trust-images",
    arg: "none",
    negatable: true,
    key: "trustImages",
    commands: ["restore", "migrate"],
    support: "yes",
    meaning: "restore as root even images another user could have written (README: Images on disk, and trust)",
  },
];

const byName = new Map<string, CriuOption>();
const byShort = new Map<string, CriuOption>();
for (const o of [...CRIU_OPTIONS, ...CRIU_BUN_OPTIONS]) {
  byName.set(o.name, o);
  if (o.short) byShort.set(o.short, o);
}

export function optionByName(name: string): CriuOption | undefined {
  return byName.get(name);
}
export function optionByShort(letter: string): CriuOption | undefined {
  return byShort.get(letter);
}

/** The refusal line for an option criu-bun parses but does not implement. */
/** Why some refused options are refused, when it is not only "not done yet". */
const WHY: Record<string, string> = {
  stream: "criu-image-streamer's socket protocol is not implemented; dump to an images directory",
};

export function refusal(name: string, what?: string): string {
  const why = !what && WHY[name] ? ` (${WHY[name]})` : "";
  return `--${name}${what ? ` ${what}` : ""}: not supported by criu-bun yet${why}`;
}
