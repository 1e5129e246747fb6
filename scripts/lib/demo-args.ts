import { parseArgs } from 'node:util';
import { nearest } from '../../shared/nearest.js';

const USAGE = `Usage: npm run demo [-- --from-source | --rebuild]

Tells the whole story on 127.0.0.1 in a temp folder, then cleans up: a server, a group and its key,
the agent as one executable, two agents connected, one disabled and enabled live, the old key refused
after regeneration, a live revoke (exit 4), the other agent unaffected. Exit status 0 when every step
happened, 1 when one did not (the last line says which), 2 for usage.

  --from-source   run the agent from source instead of the single executable
  --rebuild       build dist/connector-agent even if it is up to date
  -h, --help      this help`;

const DEMO_OPTIONS = ['--from-source', '--rebuild', '--help'];

/**
 * A usage error in one line: what was wrong, the option probably meant, where the rest is. Node's
 * parseArgs message runs on about positional arguments after `--`, which the demo takes none of.
 */
function usageError(error: Error & { code?: string }): string {
  const unknown = /^Unknown option '([^']+)'/.exec(error.message)?.[1];
  if (unknown) {
    const [meant] = nearest(unknown.replace(/=.*$/, ''), DEMO_OPTIONS);
    return `unknown option ${unknown}${meant ? ` (did you mean ${meant}?)` : ''}: npm run demo -- --help lists the options`;
  }
  const argument = /^Unexpected argument '([^']+)'/.exec(error.message)?.[1];
  if (argument)
    return `the demo takes no argument, only options (got ${argument}): npm run demo -- --help lists them`;
  return `${error.message.split('. ')[0]}: npm run demo -- --help lists the options`;
}

/** The demo's options, its help text (-h), or a usage error in one line. */
export function parseDemoArgs(
  argv: string[],
): { fromSource: boolean; rebuild: boolean } | { help: string } | { usageError: string } {
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        'from-source': { type: 'boolean' },
        rebuild: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) return { help: USAGE };
    return { fromSource: values['from-source'] ?? false, rebuild: values.rebuild ?? false };
  } catch (error) {
    return { usageError: usageError(error as Error) };
  }
}
