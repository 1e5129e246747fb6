-- Up Migration

-- The audit log shared by the replicas: one row per event. `body` is the event as the API answers
-- it; the other columns are what listing filters and pages on. `seq` orders events with the same
-- `at` (a batch from one replica keeps its order) and makes paging stable: pages follow
-- (at, seq) descending, and a page's cursor is the event id of its last row.
CREATE TABLE audit_events (
  seq bigserial PRIMARY KEY,
  event_id text NOT NULL UNIQUE,
  at timestamptz NOT NULL,
  -- C collation: a type prefix (`enrollment` takes `enrollment.refused`) is a byte range.
  type text COLLATE "C" NOT NULL,
  security boolean NOT NULL,
  body jsonb NOT NULL
);
-- Newest first, and retention's "older than".
CREATE INDEX audit_events_at ON audit_events (at DESC, seq DESC);
-- Newest first within a type (or a type prefix).
CREATE INDEX audit_events_type_at ON audit_events (type, at DESC, seq DESC);
