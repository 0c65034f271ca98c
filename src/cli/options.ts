// Parsed options as the commands see them: keys are the `key`s of the option table
// (criu-options.ts). Values stay as given (strings; true/false for flags; string[] for options
// that may repeat); -t is read with atoi. Commands read numbers with getopt's atoi where they use them.
export interface Opts {
  tree?: number;
  imagesDir: string;
  workDir?: string;
  logFile?: string;
  verbosity: number;
  leaveRunning?: boolean;
  leaveStopped?: boolean;
  restoreDetached?: boolean;
  shellJob?: boolean;
  tcpEstablished?: boolean;
  tcpClose?: boolean;
  skipInFlight?: boolean;
  pidfile?: string;
  /** true for the bare form (criu: soft), else the mode */
  manageCgroups?: string | boolean;
  displayStats?: boolean;
  timeout?: string;
  compress?: boolean;
  feature?: string[];
  all?: boolean;
  dir?: string;
  [k: string]: unknown;
}
