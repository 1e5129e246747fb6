-- Up Migration

-- Which process each replica is, for an operator listing them (`connector-server replicas`): the
-- host it runs on, its process id, the server version it runs (during a rolling upgrade, which
-- replicas run which), and why it is not ready, as its /healthz would say, written with each
-- heartbeat (empty when ready). Nullable: a replica of the previous version, still running while
-- the others are upgraded, registers without them. `url` now holds the URL the replica listens on
-- when it has no --public-url (it was empty then).
ALTER TABLE replicas
  ADD COLUMN host text,
  ADD COLUMN pid integer,
  ADD COLUMN version text,
  ADD COLUMN problems text[];
