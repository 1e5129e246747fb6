/**
 * Preloaded (`node --import`) into every node process that spawnTs starts, so none outlives the
 * process that started it: a test runner's worker killed at a timeout, or a demo killed with
 * SIGKILL, never gets to stop its children. When the parent dies, Linux gives the orphan a new one;
 * this notices and ends the process as a SIGTERM would (servers and agents shut down cleanly on it).
 * Linux's PR_SET_PDEATHSIG does this in C; Node has no binding for it, hence a check every second
 * (a timer that never keeps the process alive).
 */
const parentPid = process.ppid;

const watch = setInterval(() => {
  if (process.ppid === parentPid) return;
  clearInterval(watch);
  process.kill(process.pid, 'SIGTERM');
}, 1_000);
watch.unref();
