import { useCallback, useEffect, useState } from 'react';
import { errorText } from '../api.js';
import { copyText } from '../clipboard.js';
import { useConsole } from '../console-context.js';
import { formatTime, relativeTime } from '../format.js';
import type { GroupRow, ProvisioningKey } from '../types.js';
import { ActionButton, Confirm, Modal, ModalActions } from '../ui/modal.js';
import { KeyPolicyFields, maxUsesOf, type PolicyDraft } from './key-policy.js';

/** Why the key cannot be copied, in words; null when it can. */
function copyRefusal(view: ProvisioningKey, readOnlyReason: string | null): string | null {
  if (view.status === 'expired')
    return `This key expired ${relativeTime(view.expiresAt)}: regenerate it to get a new one.`;
  if (view.status === 'exhausted') return 'This key has enrolled as many hosts as it may: regenerate it.';
  if (view.key === null) return readOnlyReason ?? 'The key cannot be shown.';
  return null;
}

/**
 * Saves a pasted key in a file only its owner may read. The key is pasted into `cat`, not into the
 * command: a key in a command line lands in the shell's history and in `ps`. It is a command of its
 * own (not the run command's first line): pasted together, `cat` would read the next line as the key.
 * A file of that name is removed first (`>` would keep its mode), and the umask is the subshell's.
 */
const SAVE_KEY_COMMAND = '(umask 077 && rm -f connector.key && cat > connector.key)';

/**
 * Runs the agent with the saved key; once enrolled it keeps its identity in its default state dir
 * (as root /var/lib/connector-agent, the systemd unit's too). No --state-dir: a relative one
 * depended on the directory it was run from, and a host tried by hand and then given the unit
 * enrolled twice (with a single-use key, the unit was refused KEY_EXHAUSTED). `serverUrl` is where
 * agents reach the server (its --public-url when it has one, whatever address this console is open at).
 */
function runCommand(serverUrl: string): string {
  return `connector-agent --server ${serverUrl} --key-file connector.key`;
}

/** Whether `url` names this machine only (127.0.0.0/8, ::1, localhost). */
function isLoopback(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** The key's lifetime, creation to expiry (ms). */
const lifetimeMs = (view: ProvisioningKey) => Date.parse(view.expiresAt) - Date.parse(view.createdAt);

/** The current key's policy, which its successor keeps: its use limit and its lifetime (within 1 s to 365 d). */
function kept(view: ProvisioningKey): { maxUses?: number; ttl: string } {
  const ttl = `${Math.min(365 * 86_400, Math.max(1, Math.round(lifetimeMs(view) / 1000)))}s`;
  return view.maxUses === null ? { ttl } : { maxUses: view.maxUses, ttl };
}

/** A key's lifetime in the largest unit it has a whole one of: a 3-second key is not "0 hours". */
function durationWords(ms: number): string {
  const words = (value: number, unit: string) => {
    const rounded = Math.round(value * 10) / 10;
    return `${rounded} ${unit}${rounded === 1 ? '' : 's'}`;
  };
  if (ms >= 86_400_000) return words(ms / 86_400_000, 'day');
  if (ms >= 3_600_000) return words(ms / 3_600_000, 'hour');
  if (ms >= 60_000) return words(ms / 60_000, 'minute');
  return words(Math.max(1, Math.round(ms / 1000)), 'second');
}

const draftOf = (view: ProvisioningKey): PolicyDraft => ({
  maxUses: view.maxUses === null ? '' : String(view.maxUses),
  ttl: '',
});

/** The regenerate call's policy from the draft: what is left empty stays as the current key has it. */
function policyOf(view: ProvisioningKey, draft: PolicyDraft): { maxUses?: number; ttl: string } {
  const ttl = draft.ttl || kept(view).ttl;
  const maxUses = maxUsesOf(draft);
  return maxUses === undefined ? { ttl } : { maxUses, ttl };
}

/** The group's provisioning key: masked with a reveal, expiry, Copy, Regenerate, the agent command. */
export function KeyDialog({
  group,
  onClose,
  onChanged,
}: {
  group: GroupRow;
  onClose: () => void;
  onChanged: () => Promise<void>;
}) {
  const { api, readOnlyReason, serverUrl } = useConsole();
  const [view, setView] = useState<ProvisioningKey | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [revealed, setRevealed] = useState(false);
  const [copied, setCopied] = useState<string | null>(null);
  const [confirming, setConfirming] = useState(false);
  const [policy, setPolicy] = useState<PolicyDraft>({ maxUses: '', ttl: '' });

  const load = useCallback(async () => {
    try {
      const next = await api.provisioningKeys.get.query({ groupId: group.id });
      setView((before) => {
        // Another key now (regenerated elsewhere): what was copied or revealed was the old one.
        if (before && before.keyId !== next.keyId) {
          setCopied(null);
          setRevealed(false);
        }
        return next;
      });
      setError(null);
    } catch (failure) {
      setError(errorText(failure));
    }
  }, [api, group.id]);
  // Read again when the live row says the key or the group changed (a regenerate, a revoke, an
  // enrollment that used the key up, a disable), here or by another admin.
  const current = group.currentKey;
  const rowVersion = `${current?.id}/${current?.status}/${current?.uses}/${group.status}`;
  useEffect(() => {
    void rowVersion;
    void load();
  }, [load, rowVersion]);
  // A key that expires while the dialog is open is read again then: it must not show Active.
  useEffect(() => {
    if (view?.status !== 'active') return;
    const ms = Date.parse(view.expiresAt) - Date.now() + 500;
    if (!(ms > 0) || ms > 2 ** 31 - 1) return;
    const timer = setTimeout(() => void load(), ms);
    return () => clearTimeout(timer);
  }, [view, load]);

  const refusal = view ? copyRefusal(view, readOnlyReason) : null;
  const shown = view?.key && revealed ? view.key : (view?.keyMasked ?? `${view?.status ?? ''} key`);

  const copy = async (what: string, text: string) => {
    await copyText(text);
    setCopied(what);
  };

  if (confirming) {
    return (
      <Confirm
        title={`Regenerate the key of ${group.name}?`}
        confirmLabel="Regenerate key"
        danger
        onClose={() => setConfirming(false)}
        onConfirm={async () => {
          setView(
            await api.provisioningKeys.regenerate.mutate({
              groupId: group.id,
              ...(view ? policyOf(view, policy) : {}),
            }),
          );
          setRevealed(false);
          setCopied(null);
          setConfirming(false);
          await onChanged();
        }}
      >
        <p>The current key stops working at once: hosts that have not enrolled yet need the new key.</p>
        <p>Connectors already enrolled are unaffected: they keep their identities and stay connected.</p>
        {view && (
          <fieldset className="key-policy">
            <legend>The new key (as this one unless changed)</legend>
            <KeyPolicyFields
              idPrefix="new-key"
              ttlLabel="Valid for"
              keptWords={`${durationWords(lifetimeMs(view))}, as now`}
              leaveOutMs={lifetimeMs(view)}
              policy={policy}
              onChange={setPolicy}
            />
          </fieldset>
        )}
      </Confirm>
    );
  }

  return (
    <Modal title={view?.name ?? `Connector Provisioning Key - ${group.name}`} onClose={onClose} wide>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {group.status === 'disabled' && (
        <p className="warning" role="status" data-testid="key-group-disabled">
          The group is disabled: this key enrolls no host (GROUP_DISABLED) until the group is enabled.
        </p>
      )}
      {view && (
        <>
          <dl className="key-facts">
            <dt>Key</dt>
            <dd>
              <code className="key" data-testid="provisioning-key">
                {shown}
              </code>
              {view.key && (
                <button type="button" aria-pressed={revealed} onClick={() => setRevealed(!revealed)}>
                  {revealed ? 'Hide' : 'Reveal'}
                </button>
              )}
            </dd>
            <dt>Status</dt>
            <dd>{view.status === 'active' ? 'Active' : view.status === 'expired' ? 'Expired' : 'Used up'}</dd>
            <dt>Expires</dt>
            <dd>
              <time dateTime={view.expiresAt}>{formatTime(view.expiresAt)}</time> (
              {relativeTime(view.expiresAt)})
            </dd>
            <dt>Enrolled with it</dt>
            <dd>
              {view.uses}
              {view.maxUses !== null && ` of ${view.maxUses}`}
            </dd>
          </dl>
          <ModalActions>
            {/* The dialog is opened to copy the key: focus there once it is shown, not on Close. */}
            <ActionButton
              className="primary"
              disabledReason={refusal}
              autoFocus={refusal === null}
              onClick={() => copy('Key copied to the clipboard.', view.key!)}
            >
              Copy
            </ActionButton>
            <ActionButton
              className="danger"
              disabledReason={readOnlyReason}
              onClick={async () => {
                setPolicy(draftOf(view));
                setConfirming(true);
              }}
            >
              Regenerate
            </ActionButton>
          </ModalActions>
          {copied && (
            <p className="success" role="status">
              {copied}
            </p>
          )}
          {view.key && (
            <section aria-labelledby="agent-command-title" className="agent-steps">
              <h3 id="agent-command-title">Run the agent with this key</h3>
              <ol>
                <li>
                  <p>
                    On the host, save the key in a file only you can read: run this, paste the key (the Copy
                    button above), press Enter, then Ctrl-D.
                  </p>
                  {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a command that scrolls sideways must take the keyboard's focus to be scrolled (axe: scrollable-region-focusable) */}
                  <pre className="command" data-testid="save-key-command" tabIndex={0}>
                    {SAVE_KEY_COMMAND}
                  </pre>
                  <ActionButton onClick={() => copy('Command copied to the clipboard.', SAVE_KEY_COMMAND)}>
                    Copy save command
                  </ActionButton>
                </li>
                <li>
                  <p>
                    Run the agent (<code>connector-agent</code> is its single executable: the README's "Deploy
                    a connector" says how to build or copy it). Once it has enrolled it no longer needs the
                    key: delete connector.key.
                  </p>
                  {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a command that scrolls sideways must take the keyboard's focus to be scrolled (axe: scrollable-region-focusable) */}
                  <pre className="command" data-testid="run-agent-command" tabIndex={0}>
                    {runCommand(serverUrl)}
                  </pre>
                  <ActionButton
                    onClick={() => copy('Command copied to the clipboard.', runCommand(serverUrl))}
                  >
                    Copy run command
                  </ActionButton>
                  {isLoopback(serverUrl) && (
                    <p className="help" data-testid="loopback-note">
                      {new URL(serverUrl).host} reaches this server from its own host only. For an agent on
                      another host, use the address that host reaches the server at, and start the server with
                      that URL as <code>--public-url</code> (it then shows here).
                    </p>
                  )}
                </li>
              </ol>
            </section>
          )}
        </>
      )}
      <ModalActions>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </ModalActions>
    </Modal>
  );
}
