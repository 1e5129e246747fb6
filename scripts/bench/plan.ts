/** How big each scenario is: the full run (about 20–30 minutes here) or the one-minute smoke run. */
export interface Plan {
  quick: boolean;
  /** Live sessions at each measuring step; the last one is the most one process holds here. */
  steps: number[];
  /** The step at which half the sessions belong to group A and group A is deleted (mass revoke). */
  massStep: number;
  revokesPerStep: number;
  /**
   * Sessions connected and closed again before the baseline memory is taken, so that one-off costs
   * (JIT code, lazily built framework state) are not charged to the sessions measured.
   */
  warmupSessions: number;
  /** Client processes per fleet (each holds up to ~4k sessions under the 20k open-files cap). */
  clientProcs: number;
  /** Handshakes in flight at once per client process. */
  connectConcurrencyPerProc: number;
  /** Concurrent enrollments, over all client processes. */
  enrollConcurrency: number;
  /** Connectors stored before enrollment throughput is measured. */
  storedBeforeEnrollMeasure: number;
  enrollMeasureCount: number;
  signBaselineMs: number;
  /** Stored connectors for the admin-read measurements (synthetic beyond what was enrolled). */
  readsStored: number[];
  readRepeats: number;
  /** Audit log sizes (events on disk) at which `audit.list` is timed; the first is the reference. */
  auditEvents: number[];
  agentIdleMs: number;
  idleCpuWindowMs: number;
  /**
   * Connectors enrolled together and connected for the renewal scenario (the last step), with a
   * short identity lifetime: their renewals, due when a third of it is left, fall due together.
   */
  renewalN: number;
  /**
   * The renewal scenario's identity lifetime: long enough that enrolling and connecting all
   * `renewalN` (one to two minutes for 19,500 here) ends before the first renewal is due (at 2/3
   * of it): 15 s quick, else 10 ms per connector and at least 90 s (195 s for 19,500).
   */
  renewalTtlMs: number;
  /** The replicas phase (scripts/bench/scenarios/replicas.ts). */
  replicas: ReplicasPlan;
  connectTimeoutMs: number;
  stormTimeoutMs: number;
  /** The whole run stops (and fails) after this. */
  deadlineMs: number;
}

/**
 * Three replicas on one PostgreSQL, each holding up to `steps`' last value (under the 20,000 open
 * files one process may have), beside one embedded-store server at the same steps.
 */
export interface ReplicasPlan {
  count: number;
  /** Live sessions per server at each step; the last one is where the targets are read. */
  steps: number[];
  /** Client processes per replica (each with under ~4k sessions). */
  clientProcsPerReplica: number;
  warmupPerServer: number;
  revokes: number;
  /** Group A, all on replica 1, deleted: the baseline of the spread mass revoke. */
  singleMass: number;
  /** Group C, spread over every replica, deleted through replica 1. */
  spreadMass: number;
  /** Enrollments timed through one and through two replicas. */
  enrollCount: number;
  /** Sessions per replica when one of them is killed (the two others must take its agents). */
  killPerReplica: number;
}

export interface PlanOverrides {
  maxN?: number | undefined;
  steps?: number[] | undefined;
  massN?: number | undefined;
  stored?: number | undefined;
  enrollCount?: number | undefined;
  /** Sessions per replica at the replicas phase's last step. */
  replicaN?: number | undefined;
}

/** The plan for a full or quick run, with the command line's overrides (for profiling one part). */
export function makePlan(options: { quick: boolean } & PlanOverrides): Plan {
  const plan = basePlan(options.quick, options.maxN);
  if (options.steps) plan.steps = [...options.steps].sort((a, b) => a - b);
  plan.renewalN = plan.steps[plan.steps.length - 1]!;
  // 10 ms per connector: enrolling and connecting run at ~200–500 and ~250–850 per second here.
  if (!plan.quick) plan.renewalTtlMs = Math.max(90_000, plan.renewalN * 10);
  if (options.massN !== undefined) plan.massStep = options.massN;
  if (options.stored !== undefined) plan.storedBeforeEnrollMeasure = options.stored;
  if (options.enrollCount !== undefined) plan.enrollMeasureCount = options.enrollCount;
  if (options.replicaN !== undefined) setReplicaN(plan.replicas, options.replicaN);
  if (!plan.steps.includes(plan.massStep))
    throw new TypeError(
      `the mass-revoke step ${plan.massStep} must be one of the steps ${plan.steps.join(', ')}`,
    );
  if (plan.steps.some((n) => !Number.isInteger(n) || n < 2)) throw new TypeError('steps are integers ≥ 2');
  return plan;
}

function basePlan(quick: boolean, maxNOverride: number | undefined): Plan {
  if (quick) {
    const maxN = maxNOverride ?? 300;
    return {
      quick: true,
      steps: [100, maxN],
      massStep: 100,
      revokesPerStep: 20,
      warmupSessions: 20,
      clientProcs: 2,
      connectConcurrencyPerProc: 32,
      enrollConcurrency: 64,
      storedBeforeEnrollMeasure: 200,
      enrollMeasureCount: 150,
      signBaselineMs: 500,
      readsStored: [2000],
      readRepeats: 5,
      auditEvents: [1000, 20_000],
      agentIdleMs: 5000,
      idleCpuWindowMs: 1000,
      renewalN: maxN,
      renewalTtlMs: 15_000,
      replicas: {
        count: 3,
        steps: [50, 100],
        clientProcsPerReplica: 1,
        warmupPerServer: 10,
        revokes: 12,
        singleMass: 30,
        spreadMass: 60,
        enrollCount: 60,
        killPerReplica: 60,
      },
      connectTimeoutMs: 30_000,
      stormTimeoutMs: 30_000,
      // ~160 s on a quiet machine; a loaded one passed 200 s in the replicas step. The test that
      // runs it allows 360 s: this bound plus main.ts's 60 s grace stays inside it.
      deadlineMs: 290_000,
    };
  }
  const maxN = maxNOverride ?? 19_500;
  return {
    quick: false,
    steps: [1000, 10_000, maxN],
    massStep: 10_000,
    revokesPerStep: 200,
    warmupSessions: 200,
    clientProcs: 5,
    connectConcurrencyPerProc: 32,
    enrollConcurrency: 64,
    storedBeforeEnrollMeasure: 10_000,
    enrollMeasureCount: 3000,
    signBaselineMs: 3000,
    readsStored: [10_000, 50_000],
    readRepeats: 30,
    auditEvents: [1000, 1_000_000],
    agentIdleMs: 60_000,
    idleCpuWindowMs: 10_000,
    renewalN: maxN,
    renewalTtlMs: 90_000,
    // 58,002 live agents (3 × 19,334: "58k", and no fewer). When one of 3 is killed, the two others take its agents, so
    // each holds 11,000 then: agents pick a random replica first, and the spread seen was ±17 %,
    // which the two others must still hold under the open-files cap afterwards.
    replicas: {
      count: 3,
      steps: [1000, 19_334],
      clientProcsPerReplica: 5,
      warmupPerServer: 200,
      revokes: 200,
      singleMass: 5000,
      spreadMass: 10_000,
      enrollCount: 3000,
      killPerReplica: 11_000,
    },
    connectTimeoutMs: 240_000,
    stormTimeoutMs: 180_000,
    deadlineMs: 60 * 60_000,
  };
}

/** Scales the replicas phase to `perReplica` live sessions per replica at its last step. */
function setReplicaN(plan: ReplicasPlan, perReplica: number): void {
  const scale = perReplica / plan.steps[plan.steps.length - 1]!;
  plan.steps = [...new Set([...plan.steps.slice(0, -1).filter((n) => n < perReplica), perReplica])];
  plan.singleMass = Math.floor(plan.singleMass * scale);
  plan.spreadMass = Math.floor(plan.spreadMass * scale);
  plan.killPerReplica = Math.floor(plan.killPerReplica * scale);
  plan.clientProcsPerReplica = Math.max(
    1,
    Math.min(plan.clientProcsPerReplica, Math.ceil(perReplica / 3000)),
  );
}

/** Sessions per group wanted at step `n`: half in A up to the mass step, all in B after it. */
export function stepTargets(plan: Plan, n: number): { A: number; B: number } {
  if (n <= plan.massStep) return { A: Math.floor(n / 2), B: n - Math.floor(n / 2) };
  return { A: 0, B: n };
}

/** Connectors each group needs over a whole fleet run (B also replaces every revoked one). */
export function identitiesNeeded(plan: Plan): { A: number; B: number } {
  const maxN = plan.steps[plan.steps.length - 1]!;
  return {
    A: Math.floor(plan.massStep / 2),
    B: maxN + plan.revokesPerStep * plan.steps.length + plan.warmupSessions,
  };
}
