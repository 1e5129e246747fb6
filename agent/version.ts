import pkg from '../package.json' with { type: 'json' };

// Set by scripts/build-agent.ts (esbuild define) in the single executable; absent when run from source.
declare const __AGENT_VERSION__: string | undefined;
declare const __AGENT_BUILD_TIME__: string | undefined;
declare const __AGENT_COMMIT__: string | undefined;

/** The single executable carries the version it was built with; from source, package.json's. */
export const AGENT_VERSION: string =
  typeof __AGENT_VERSION__ !== 'undefined' ? __AGENT_VERSION__ : pkg.version;
export const BUILD_TIME: string =
  typeof __AGENT_BUILD_TIME__ !== 'undefined' ? __AGENT_BUILD_TIME__ : 'source';
export const BUILD_COMMIT: string = typeof __AGENT_COMMIT__ !== 'undefined' ? __AGENT_COMMIT__ : 'source';

export function versionLine(): string {
  return `connector-agent ${AGENT_VERSION} (built ${BUILD_TIME}, commit ${BUILD_COMMIT}, node ${process.versions.node}, ${process.platform}-${process.arch})`;
}
