/** A provisioning key's policy as the console's forms hold it (Create group, Regenerate). */

/** The lifetimes the forms offer, as the API takes them, in words, and in ms. */
const LIFETIMES: ReadonlyArray<[ttl: string, words: string, ms: number]> = [
  ['1h', '1 hour', 3_600_000],
  ['1d', '1 day', 86_400_000],
  ['7d', '7 days', 7 * 86_400_000],
  ['14d', '14 days', 14 * 86_400_000],
  ['30d', '30 days', 30 * 86_400_000],
];

/** The most enrollments a key may be limited to (the API's bound). */
const MAX_USES = 1_000_000;

/** A key's policy as a form's fields hold it: a draft until submitted. */
export interface PolicyDraft {
  /** Enrollments the key allows: '' is no limit. */
  maxUses: string;
  /** One of LIFETIMES, or '' for the form's default (the server's, or the current key's). */
  ttl: string;
}

export const EMPTY_POLICY: PolicyDraft = { maxUses: '', ttl: '' };

/**
 * The use limit of a draft: undefined for none. A limit that is not a whole number from 1 to
 * 1,000,000 is refused here, in words the form shows.
 */
export function maxUsesOf(draft: PolicyDraft): number | undefined {
  const limit = draft.maxUses.trim();
  if (limit === '') return undefined;
  // Digits only: Number() read "1e3" as a limit of 1,000.
  const maxUses = /^\d{1,7}$/.test(limit) ? Number(limit) : Number.NaN;
  if (!Number.isInteger(maxUses) || maxUses < 1 || maxUses > MAX_USES)
    throw new Error('Enrollments allowed: a whole number from 1 to 1,000,000, or empty for no limit.');
  return maxUses;
}

/**
 * The two fields of a key's policy, for a form's grid: its lifetime (the form's default first,
 * named `keptWords`, then LIFETIMES but `leaveOutMs`) and its enrollment limit.
 */
export function KeyPolicyFields({
  idPrefix,
  ttlLabel,
  keptWords,
  leaveOutMs,
  policy,
  onChange,
}: {
  idPrefix: string;
  ttlLabel: string;
  keptWords: string;
  leaveOutMs?: number;
  policy: PolicyDraft;
  onChange: (policy: PolicyDraft) => void;
}) {
  return (
    <>
      <label htmlFor={`${idPrefix}-ttl`}>{ttlLabel}</label>
      <select
        id={`${idPrefix}-ttl`}
        value={policy.ttl}
        onChange={(e) => onChange({ ...policy, ttl: e.target.value })}
      >
        <option value="">{keptWords}</option>
        {LIFETIMES.filter(([, , ms]) => ms !== leaveOutMs).map(([ttl, words]) => (
          <option key={ttl} value={ttl}>
            {words}
          </option>
        ))}
      </select>
      <label htmlFor={`${idPrefix}-uses`}>Enrollments allowed</label>
      <input
        id={`${idPrefix}-uses`}
        inputMode="numeric"
        value={policy.maxUses}
        placeholder="no limit"
        maxLength={7}
        onChange={(e) => onChange({ ...policy, maxUses: e.target.value })}
      />
    </>
  );
}
