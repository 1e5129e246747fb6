/** The demo's cast, named once: the group and the agents the story starts. */
export const GROUP_NAME = 'Demo';
export const [FIRST, SECOND, LATE] = ['demo-agent-1', 'demo-agent-2', 'demo-agent-3'] as const;

/** The story as the narration tells it: each step's title and what it shows. */
export const STEPS: ReadonlyArray<readonly [string, string]> = [
  [
    'Start the enrollment server',
    `The real \`connector-server serve\` CLI, on 127.0.0.1 and a port the OS picks, with an empty data
dir: its first start creates the store, the signing key and an admin API key file (0600).`,
  ],
  [
    `Create the group "${GROUP_NAME}" and read its provisioning key`,
    `A group is born with one current key (valid 14 days). \`groups key\` prints the key alone on
stdout (so \`$(…)\` captures it) and its details on stderr. We save it to a 0600 file.`,
  ],
  [
    'Get the agent as ONE executable: dist/connector-agent',
    `Operators copy a single file to a host: no Node.js, no node_modules. We reuse the binary if it is
newer than every file in agent/ and shared/; otherwise we build it.`,
  ],
  [
    'Run two agents with the key',
    `Each agent makes an Ed25519 key pair, enrolls once with the key, saves the signed identity it gets
(0600) in its own state dir, then holds a websocket session with it.`,
  ],
  [
    'List the connectors: both connected',
    `The server knows each connector by the identity it issued; each agent reported its host facts
over its session.`,
  ],
  [
    `Disable ${SECOND}, then enable it, live`,
    `Disabling keeps the agent connected and tells it at once over its session; so does enabling.
Its identity is kept throughout.`,
  ],
  [
    'Regenerate the key: the old one is refused at once',
    `The old key is refused with KEY_SUPERSEDED from the moment the call returns; connectors already
enrolled keep their identities and stay connected.`,
  ],
  [
    `Revoke ${FIRST} live`,
    `The server pushes "revoked": the agent wipes its identity and exits 4, its identity is refused for
ever, and the group's key is regenerated (whoever saw the key that enrolled it can enroll no more).`,
  ],
  [
    `${SECOND} is still connected`,
    'Revocation is per connector: the other agent keeps its identity and its session.',
  ],
  ['Clean up', 'Every process still running gets SIGTERM (SIGKILL after 5 s), then the temp folder goes.'],
];
