// fs-native-extensions ships no types; these are the calls this project makes.
declare module 'fs-native-extensions' {
  /** Asks for a lock on the file open at `fd`: true if granted, false if another open file holds one. */
  export function tryLock(fd: number, options?: { shared?: boolean }): boolean;
  /** Gives up a lock taken on `fd`. */
  export function unlock(fd: number): void;
  const fsx: { tryLock: typeof tryLock; unlock: typeof unlock };
  export default fsx;
}
