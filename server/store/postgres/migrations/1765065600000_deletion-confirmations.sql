-- Up Migration

-- A deleted connector's host confirmed the deletion on the replica that held its session. The
-- replica records it here and announces it on the sessions channel; a delete answered by another
-- replica reads it back from this table before it tells the admin the host confirmed. The
-- announcement alone is not believed: PostgreSQL lets any role that may connect to the database
-- notify on any channel, and only the replicas' role can write this table. A row is needed only
-- while a delete waits for its confirmation (under a second): replicas remove rows older than a few
-- minutes as they reap dead replicas. confirmed_at is epoch ms from the confirming replica's clock.
CREATE TABLE deletion_confirmations (
  connector_id text PRIMARY KEY,
  replica_id text NOT NULL,
  confirmed_at bigint NOT NULL,
  confirmed_from text
);
CREATE INDEX deletion_confirmations_confirmed_at ON deletion_confirmations (confirmed_at);
