import type { Command } from 'commander';
import { parseDuration, parsedFlag } from '../flag-values.js';
import { JWKS_MAX_AGE_SECONDS } from '../server-config.js';
import { type AdminEnv, adminCli, print } from './admin-common.js';
import { flag, forceFlag } from './flags.js';
import { printFields, printTable, relative } from './format.js';

/** `--activate-in`: any duration, or zero (`0s`) for at once; whole seconds, rounded up. */
const activateInSeconds = parsedFlag((text) =>
  /^0+(\.0+)?\s*(ms|s|m|h|d)?$/.test(text.trim()) ? 0 : Math.ceil(parseDuration(text) / 1000),
);

/** `signing-keys list | rotate [--activate-in DUR] | retire KID [--force]`. */
export function registerSigningKeyCommands(program: Command, env: AdminEnv): void {
  const admin = adminCli(env);
  const keys = program
    .command('signing-keys')
    .description('list, rotate and retire the keys that sign connector identities');
  admin.command(
    keys,
    'list',
    'list signing keys with their state and the identities each signs',
    async (client, options) => {
      const list = await client.signingKeys.list.query({});
      print(options, list, () =>
        printTable(
          ['KID', 'ALGORITHM', 'STATE', 'CREATED', 'ACTIVATES', 'RETIRED', 'IDENTITIES'],
          list.map((k) => [
            k.kid,
            k.algorithm,
            k.state,
            k.createdAt,
            k.activateAt ? `${k.activateAt} (${relative(k.activateAt)})` : 'never',
            k.retiredAt,
            k.identities,
          ]),
        ),
      );
    },
  );
  const rotateFlags = {
    activateIn: flag(
      '--activate-in <duration>',
      'delay before it signs, e.g. 10m, 1h, or 0s for at once',
      activateInSeconds,
      { default: '10m' },
    ),
  };
  admin.command(
    keys,
    'rotate',
    'create a signing key, published now, that signs after a delay',
    rotateFlags,
    async (client, options) => {
      const seconds = options.activateIn;
      const r = await client.signingKeys.rotate.mutate({ activateInSeconds: seconds });
      print(options, r, () => {
        printFields([
          ['kid', r.key.kid],
          ['state', r.key.state],
          ['activates', `${r.key.activateAt} (${relative(r.key.activateAt)})`],
        ]);
        if (r.cancelled.length > 0)
          console.log(`It replaces a rotation that had not activated; retired: ${r.cancelled.join(', ')}.`);
        if (seconds < JWKS_MAX_AGE_SECONDS)
          console.log(
            `Note: JWKS caches may hold the key set for ${JWKS_MAX_AGE_SECONDS} s; third parties may not know this key yet.`,
          );
        console.log(
          'The old key stays published. Once `signing-keys list` shows 0 identities for it, retire it with `signing-keys retire KID`.',
        );
      });
    },
  );
  admin.command(
    keys,
    'retire <kid>',
    'take a signing key out of the JWKS and of verification',
    forceFlag('retire even while connectors hold identities it signed (they must enroll again)'),
    async (client, options, kid) => {
      const { force } = options;
      const r = await client.signingKeys.retire.mutate({ kid: kid!, force });
      print(options, r, () => {
        console.log(`Signing key ${r.key.kid} retired.`);
        if (r.identities > 0)
          console.log(
            `${r.identities} connector(s) held a current identity signed by it: ${r.connected} connected one(s) ` +
              `get a new identity now (within seconds); ${r.identities - r.connected} must enroll again.`,
          );
      });
    },
  );
}
