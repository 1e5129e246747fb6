/** What the agent is built for: the five targets, their node binaries and file formats, the SEA names. */

export const TARGETS = ['linux-x64', 'linux-arm64', 'win-x64', 'darwin-x64', 'darwin-arm64'] as const;
export type AgentTarget = (typeof TARGETS)[number];

export type BinaryFormat = 'elf' | 'pe' | 'macho';
export type TargetArch = 'x64' | 'arm64';

export interface TargetSpec {
  platform: NodeJS.Platform;
  arch: TargetArch;
  format: BinaryFormat;
  /** npm package (a third-party repackaging of the official Node release) used when building cross. */
  npmPackage: string;
  /** Path of the node executable inside that package's tarball. */
  binInTarball: string;
}

function spec(platform: NodeJS.Platform, arch: TargetArch, format: BinaryFormat): TargetSpec {
  const os = platform === 'win32' ? 'win' : platform;
  const exe = platform === 'win32' ? 'node.exe' : 'node';
  return { platform, arch, format, npmPackage: `node-${os}-${arch}`, binInTarball: `package/bin/${exe}` };
}

export const TARGET_SPECS: Record<AgentTarget, TargetSpec> = {
  'linux-x64': spec('linux', 'x64', 'elf'),
  'linux-arm64': spec('linux', 'arm64', 'elf'),
  'win-x64': spec('win32', 'x64', 'pe'),
  'darwin-x64': spec('darwin', 'x64', 'macho'),
  'darwin-arm64': spec('darwin', 'arm64', 'macho'),
};

/** The fuse node checks at start-up: postject flips its trailing ':0' to ':1' once a blob is injected. */
export const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
export const SEA_RESOURCE = 'NODE_SEA_BLOB';
/** Mach-O segment node looks the blob up in (node's docs: `--macho-segment-name NODE_SEA`). */
export const MACHO_SEGMENT = 'NODE_SEA';

export function isAgentTarget(value: string): value is AgentTarget {
  return (TARGETS as readonly string[]).includes(value);
}

/** The target this machine can run, if it is one we build for. */
export function hostTarget(): AgentTarget | undefined {
  return TARGETS.find(
    (t) => TARGET_SPECS[t].platform === process.platform && TARGET_SPECS[t].arch === process.arch,
  );
}

/** dist/connector-agent for linux-x64 (what docs/deploy.md installs), else connector-agent-<target>[.exe]. */
export function binaryName(target: AgentTarget): string {
  const base = target === 'linux-x64' ? 'connector-agent' : `connector-agent-${target}`;
  return TARGET_SPECS[target].platform === 'win32' ? `${base}.exe` : base;
}
