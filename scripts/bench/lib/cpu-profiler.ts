import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';

/**
 * The IPC handlers that profile this process's CPU on demand (`--profile`): `cpuProfileStart`, then
 * `cpuProfileStop` writes the profile to `file`. Servers and client processes both serve them.
 */
export function cpuProfilerHandlers() {
  let profiler: Session | null = null;
  return {
    cpuProfileStart: async () => {
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
      return true;
    },
    cpuProfileStop: async ({ file }: { file: string }) => {
      if (!profiler) return false;
      const { profile } = await profiler.post('Profiler.stop');
      profiler.disconnect();
      profiler = null;
      await writeFile(file, JSON.stringify(profile));
      return true;
    },
  };
}
