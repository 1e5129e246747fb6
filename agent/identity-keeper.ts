import { type FSWatcher, watch } from 'node:fs';
import type { IdentityStore, SavedIdentity } from './identity-store.js';
import type { AgentLogger } from './log.js';
import { cannotWrite } from './state-dir-problems.js';

/**
 * How often the agent checks that its identity is still in its state dir, besides when the dir
 * says it changed (inotify does not see every file system: NFS, some FUSE mounts).
 */
export const KEEP_CHECK_MS = 60_000;
/**
 * How long the dir must be still before a change is checked: a `rm -rf` under way removes the files
 * first and the dir last, and a file put back meanwhile would fail it ("Directory not empty").
 */
export const SETTLE_MS = 2_000;

export interface IdentityKeeperOptions {
  store: Pick<IdentityStore, 'load' | 'save' | 'ensureDir' | 'dir' | 'identityFile' | 'rewriteStatus'>;
  logger: Pick<AgentLogger, 'warn' | 'error' | 'info'>;
  /** The identity to put back: the session's current one. */
  current: () => SavedIdentity;
  /** Makes the state dir's lock file again (it went with the dir). */
  relock?: (() => Promise<void>) | undefined;
  checkMs?: number;
  settleMs?: number;
}

/**
 * Puts the identity back when its file (or the whole state dir) is removed while the agent runs:
 * a cleanup job, a mistaken `rm -rf`, a tmpfs state dir. The agent works on from memory, but its
 * next start would find no identity and enroll the host again with the provisioning key, as a new
 * connector beside the old one. A file that is there is never touched: damaged, unreadable or
 * another connector's, it is an operator's to deal with (the next start says so).
 */
export class IdentityKeeper {
  private timer: NodeJS.Timeout | undefined;
  private settling: NodeJS.Timeout | undefined;
  private watcher: FSWatcher | undefined;
  private checking: Promise<void> = Promise.resolve();
  /** A check is queued behind the one running: more events meanwhile need no other. */
  private queued = false;
  private stopped = false;
  /** The last put-back failed: said once, tried at each check and at exit. */
  private failing = false;
  /** Keeping at all: a session over a store that is no dir (unenroll, the bench's) never starts it. */
  private started = false;

  constructor(private readonly o: IdentityKeeperOptions) {}

  start(): void {
    this.started = true;
    this.timer = setInterval(() => this.schedule(), this.o.checkMs ?? KEEP_CHECK_MS);
    this.timer.unref();
    this.watch();
  }

  /** Stops checking, once a check under way is done: the identity may be wiped after this. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.settling);
    this.watcher?.close();
    await this.checking;
  }

  /**
   * Checks once the dir has been still for SETTLE_MS after a change. The agent's own writes wake it
   * too (a check that finds the file is one read). A removed dir ends the watch; the put-back dir is
   * watched anew.
   */
  private watch(): void {
    this.watcher?.close();
    this.watcher = undefined;
    try {
      const watcher = watch(this.o.store.dir, { persistent: false }, () => this.settle());
      watcher.on('error', () => {
        watcher.close();
        if (this.watcher === watcher) this.watcher = undefined;
      });
      this.watcher = watcher;
    } catch {
      // Gone already, or no watches left: the timer still checks.
    }
  }

  private settle(): void {
    clearTimeout(this.settling);
    this.settling = setTimeout(() => this.schedule(), this.o.settleMs ?? SETTLE_MS);
    this.settling.unref();
  }

  private schedule(): void {
    if (this.stopped || this.queued) return;
    this.queued = true;
    this.checking = this.checking
      .then(() => {
        this.queued = false;
        return this.check();
      })
      // A check must never end the agent: what it could not do is said, and the next one tries again.
      .catch((error: unknown) =>
        this.o.logger.error('could not check the state dir for the identity', { error: String(error) }),
      );
  }

  /**
   * At exit, not wiping: a last look, and the identity put back if it is missing. A removal the
   * settle delay had not checked yet (a `rm -rf` then a stop within SETTLE_MS) would otherwise leave
   * no identity, and the next start would enroll the host as a second connector.
   */
  async flush(): Promise<void> {
    await this.stop();
    if (!this.started) return;
    const onDisk = this.failing ? null : await Promise.resolve(this.o.store.load()).catch(() => undefined);
    if (onDisk === null) await this.putBack();
  }

  private async check(): Promise<void> {
    if (this.stopped) return;
    if (!this.watcher) this.watch();
    // Anything but "not there" (damaged, a link, unreadable) is left as it is.
    const onDisk = await this.o.store.load().catch(() => undefined);
    if (onDisk !== null || this.stopped) return;
    if (!this.failing)
      this.o.logger.warn(
        `${this.o.store.identityFile} was removed while the agent ran: it is saved again from memory, so that the next ` +
          "start does not enroll this host as a new connector. To remove this host's identity, stop the agent first, " +
          "or run 'connector-agent unenroll'",
      );
    await this.putBack();
  }

  private async putBack(): Promise<void> {
    try {
      await this.o.store.ensureDir();
      // Watched before anything is written into it: removed again at once, it is seen.
      if (!this.stopped) this.watch();
      await this.o.store.save(this.o.current());
      await this.o.relock?.();
      await this.o.store.rewriteStatus();
    } catch (error) {
      if (!this.failing)
        this.o.logger.error(
          cannotWrite(
            this.o.store.dir,
            error,
            'the identity is only in memory; it is saved again every minute and at exit',
          ),
        );
      this.failing = true;
      return;
    }
    if (this.failing) this.o.logger.info('identity saved again', { file: this.o.store.identityFile });
    this.failing = false;
  }
}
