/**
 * How many live sessions each source address holds, against a cap (NAT'd fleets share one address,
 * so the cap is generous; a single host opening thousands is not a fleet).
 */
export class SessionsPerAddress {
  private readonly counts = new Map<string, number>();

  /** @param max live sessions allowed from one address; Infinity for no cap. */
  constructor(readonly max: number) {
    if (!(max >= 0)) throw new TypeError('max must be zero or more sessions');
  }

  /** Whether one more session from `remoteAddress` stays within the cap. */
  hasRoom(remoteAddress: string): boolean {
    return (this.counts.get(remoteAddress) ?? 0) < this.max;
  }

  /** How many live sessions `remoteAddress` holds. */
  count(remoteAddress: string): number {
    return this.counts.get(remoteAddress) ?? 0;
  }

  add(remoteAddress: string): void {
    this.counts.set(remoteAddress, (this.counts.get(remoteAddress) ?? 0) + 1);
  }

  remove(remoteAddress: string): void {
    const count = (this.counts.get(remoteAddress) ?? 0) - 1;
    if (count > 0) this.counts.set(remoteAddress, count);
    else this.counts.delete(remoteAddress);
  }

  /** How many addresses hold a session (an emptied address is forgotten). */
  get addresses(): number {
    return this.counts.size;
  }
}
