/**
 * When each live session's identity is due for renewal, in buckets of `bucketMs`: a Map from bucket
 * index to the sessions due in it, and a min-heap of the indices that hold any. Adding, moving and
 * removing a session cost O(1) (plus O(log buckets) for a new bucket); finding what is due looks
 * only at the buckets that are due, never at every session, so lifetimes of seconds and of years
 * share the one structure and a jump of the clock by a year costs no more than the buckets it passes.
 */
export class RenewalSchedule<T> {
  private readonly buckets = new Map<number, Set<T>>();
  /** Which bucket each scheduled item sits in. */
  private readonly bucketOf = new Map<T, number>();
  /** Bucket indices, smallest first; an index whose bucket emptied stays until popped, then is skipped. */
  private readonly heap: number[] = [];
  private readonly inHeap = new Set<number>();

  constructor(readonly bucketMs: number) {
    if (!(bucketMs > 0)) throw new TypeError('bucketMs must be a positive number of milliseconds');
  }

  get size(): number {
    return this.bucketOf.size;
  }

  /**
   * Schedules `item` (moving it if it was scheduled): it is handed out by the first `popDue(now)`
   * with `now >= dueAt` rounded up to its bucket, so never early and at most `bucketMs` late.
   */
  add(item: T, dueAt: number): void {
    this.delete(item);
    const index = Math.ceil(dueAt / this.bucketMs);
    let bucket = this.buckets.get(index);
    if (!bucket) {
      bucket = new Set();
      this.buckets.set(index, bucket);
      if (!this.inHeap.has(index)) this.pushIndex(index);
    }
    bucket.add(item);
    this.bucketOf.set(item, index);
  }

  delete(item: T): void {
    const index = this.bucketOf.get(item);
    if (index === undefined) return;
    this.bucketOf.delete(item);
    const bucket = this.buckets.get(index);
    bucket?.delete(item);
    if (bucket?.size === 0) this.buckets.delete(index);
  }

  /** Removes and returns every item due at `now`, earliest buckets first. */
  popDue(now: number): T[] {
    const due: T[] = [];
    while (this.heap.length > 0 && this.heap[0]! * this.bucketMs <= now) {
      const index = this.popIndex();
      const bucket = this.buckets.get(index);
      if (!bucket) continue;
      this.buckets.delete(index);
      for (const item of bucket) {
        this.bucketOf.delete(item);
        due.push(item);
      }
    }
    return due;
  }

  private pushIndex(index: number): void {
    const heap = this.heap;
    this.inHeap.add(index);
    heap.push(index);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]! <= index) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = index;
  }

  private popIndex(): number {
    const heap = this.heap;
    const top = heap[0]!;
    this.inHeap.delete(top);
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && heap[right]! < heap[left]! ? right : left;
        if (heap[child]! >= last) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}
