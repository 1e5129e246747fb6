import { describe, expect, it } from 'vitest';
import { rootStateHint } from './status-command.js';

const nothingHere = { enrolled: false, agent: null };
const asUser = { stateDirNamed: false, uid: 1000, rootDirExists: true, rootDir: '/var/lib/connector-agent' };

describe('rootStateHint (status as another user than root)', () => {
  it("points at root's state dir when this user's own holds nothing and root's exists", () => {
    expect(rootStateHint(nothingHere, asUser)).toBe(
      'note: /var/lib/connector-agent exists: an agent run as root (the systemd unit) keeps its state there; read it with sudo connector-agent status',
    );
  });

  it('says nothing when there is something here, a state dir was named, it runs as root, or root has none', () => {
    expect(rootStateHint({ ...nothingHere, enrolled: true }, asUser)).toBeNull();
    expect(rootStateHint({ ...nothingHere, identityError: 'damaged' }, asUser)).toBeNull();
    expect(rootStateHint(nothingHere, { ...asUser, stateDirNamed: true })).toBeNull();
    expect(rootStateHint(nothingHere, { ...asUser, uid: 0 })).toBeNull();
    expect(rootStateHint(nothingHere, { ...asUser, rootDirExists: false })).toBeNull();
  });
});
