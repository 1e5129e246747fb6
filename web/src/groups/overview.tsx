import { useConsole } from '../console-context.js';
import type { GroupRow } from '../types.js';

/** "Next Steps — Deploy Your Connectors": the groups with no connector yet. */
export function NextSteps({ groups, onViewKey }: { groups: GroupRow[]; onViewKey: (g: GroupRow) => void }) {
  const { readOnlyReason } = useConsole();
  const waiting = groups.filter((g) => g.counts.total === 0);
  if (waiting.length === 0) return null;
  // A read-only key sees a key masked, without Copy: it is told who can.
  const howTo = readOnlyReason
    ? "These groups have no connector yet. An admin key can copy a group's provisioning key to run the agent with."
    : "These groups have no connector yet. Copy a group's provisioning key and run the agent with it.";
  return (
    <section className="next-steps" aria-labelledby="next-steps-title">
      <h2 id="next-steps-title">Next Steps — Deploy Your Connectors</h2>
      <p>{howTo}</p>
      <ul>
        {waiting.map((group) => (
          <li key={group.id}>
            <span className="group-name">{group.name}</span>
            <button
              type="button"
              onClick={() => onViewKey(group)}
              aria-label={`View Provisioning Key of ${group.name}`}
            >
              View Provisioning Key
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

/** The count tiles above the table, summed from the groups' own counts (no extra call). */
export function CountTiles({ groups }: { groups: GroupRow[] }) {
  const sum = (pick: (g: GroupRow) => number) => groups.reduce((total, g) => total + pick(g), 0);
  const tiles: [string, number][] = [
    ['Groups', groups.length],
    ['Connectors', sum((g) => g.counts.total)],
    ['Connected', sum((g) => g.counts.connected)],
    // A revoked connector is never connected again: it is counted as revoked, not as one to look into.
    // "Not connected": the enrolled ones that never connected are in it (the connectors page and the
    // CLI say "never" for them), which "Disconnected" hid.
    [
      'Not connected',
      sum((g) => Math.max(0, g.counts.disconnected + g.counts.neverConnected - g.counts.revoked)),
    ],
    ['Revoked', sum((g) => g.counts.revoked)],
    ['Disabled groups', groups.filter((g) => g.status === 'disabled').length],
  ];
  return (
    <ul className="tiles" aria-label="Counts">
      {tiles.map(([label, value]) => (
        <li key={label} className="tile">
          <span className="tile-value">{value}</span>
          <span className="tile-label">{label}</span>
        </li>
      ))}
    </ul>
  );
}
