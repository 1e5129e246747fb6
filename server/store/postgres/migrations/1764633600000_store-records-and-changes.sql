-- Up Migration

-- Every record of the store, one row each: the section (groups, provisioningKeys, connectors,
-- apiKeys), the record's id, its body as the embedded store keeps it, and a version that each
-- committed change of the row raises (the replicas' optimistic check).
CREATE TABLE store_records (
  section text NOT NULL,
  id text NOT NULL,
  body jsonb NOT NULL,
  version bigint NOT NULL,
  PRIMARY KEY (section, id)
);

-- The change feed: what each transaction changed, written in that transaction. Replicas read it to
-- keep their copy current and to push live changes to the agents they hold.
-- A sequence number is taken before its transaction commits, so numbers do not become visible in
-- order; readers follow `xid` instead (the writer's transaction id): every transaction older than a
-- snapshot's xmin has finished, so a reader that re-reads from the xmin of its previous read misses
-- nothing, and each op's record version makes a second reading harmless.
CREATE TABLE store_changes (
  seq bigserial PRIMARY KEY,
  xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  origin text NOT NULL,
  sections text[] NOT NULL,
  ops jsonb NOT NULL,
  committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX store_changes_xid ON store_changes (xid);
