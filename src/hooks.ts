// Notification hooks: the points of dump and restore where criu stops and tells someone (its
// --action-script programs, or the caller of `swrk` over RPC) what it is about to do, and waits.
// Both front doors implement `Hooks`; the pipelines call `runHook` and know nothing else.
//
// Order, as criu 4.2 runs them (observed with --action-script):
//   dump:    pre-dump; [tree frozen] network-lock*; query-ext-files (RPC only); [images written]
//            post-dump; network-unlock* (only when the tree keeps running: -R, -s, or a failure)
//   restore: pre-restore; [root created in its namespaces] setup-namespaces(pid)**,
//            post-setup-namespaces**; orphan-pts-master (fd; RPC only); [every task restored]
//            post-restore(pid); network-unlock*; pre-resume; [tasks released] post-resume
//   *  only when the tree has its own network namespace
//   ** only when the tree has any namespace of its own
// A hook that fails stops the pipeline as any error would (the tree is released or killed).
import { CriuError, log } from "./log";
import { errnoText } from "./sys/errno";

export type HookAction =
  | "pre-dump"
  | "network-lock"
  | "query-ext-files"
  | "post-dump"
  | "network-unlock"
  | "pre-restore"
  | "setup-namespaces"
  | "post-setup-namespaces"
  | "orphan-pts-master"
  | "post-restore"
  | "pre-resume"
  | "post-resume"
  | "status-ready";

export interface HookContext {
  /** the root process of the tree as criu-bun sees it (dump: the target; restore: once it exists) */
  pid?: number;
  /** orphan-pts-master: the pty master to hand over (RPC passes it with SCM_RIGHTS) */
  fd?: number;
}

/**
 * One implementation per front door. `run` returns only when the other side is done with the
 * notification (the script exited, the RPC caller answered notify_success); it throws a
 * CriuError when the other side refuses or is gone. Synchronous on purpose: the dump and restore
 * pipelines are synchronous, and the tree must stay exactly where it is while the hook runs.
 */
export interface Hooks {
  run(action: HookAction, ctx: HookContext): void;
  /** whether the other side wants this kind of notification at all (orphan-pts-master needs a taker) */
  wants?(action: HookAction): boolean;
}

/** Run ACTION's hook, if there are hooks; the pipelines' only way in. */
export function runHook(hooks: Hooks | undefined, action: HookAction, ctx: HookContext = {}) {
  if (!hooks) return;
  if (hooks.wants && !hooks.wants(action)) return;
  log.info(`Running ${action} scripts${ctx.pid !== undefined ? ` (pid ${ctx.pid})` : ""}`);
  hooks.run(action, ctx);
}

/**
 * criu's --action-script: each script runs once per hook with CRTOOLS_SCRIPT_ACTION set, plus
 * CRTOOLS_IMAGE_DIR and, once the root is known, CRTOOLS_INIT_PID (as criu sets them). A script
 * that exits non-zero fails the dump or restore. Scripts see criu-bun's stdio.
 */
export class ScriptHooks implements Hooks {
  constructor(
    private scripts: string[],
    private imagesDir: string
  ) {}
  wants(action: HookAction) {
    return action !== "query-ext-files" && action !== "orphan-pts-master";
  }
  run(action: HookAction, ctx: HookContext) {
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      CRTOOLS_SCRIPT_ACTION: action,
      CRTOOLS_IMAGE_DIR: this.imagesDir,
    };
    if (ctx.pid !== undefined) env.CRTOOLS_INIT_PID = String(ctx.pid);
    for (const s of this.scripts) {
      let r;
      try {
        r = Bun.spawnSync([s], { env, stdin: "inherit", stdout: "inherit", stderr: "inherit" });
      } catch (e) {
        throw new CriuError("action-script", `cannot run ${s} for ${action}: ${errnoText(e)}`);
      }
      if (!r.success)
        throw new CriuError(
          "action-script",
          `${s} failed at ${action} (${r.signalCode ? `signal ${r.signalCode}` : `exit ${r.exitCode}`})`
        );
    }
  }
}
