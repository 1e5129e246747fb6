-- Up Migration

-- The replicas of one deployment, each announcing it is alive: a replica whose heartbeat (epoch ms,
-- from its own clock) is older than the dead-after bound is taken for dead, and its sessions with it.
CREATE TABLE replicas (
  id text PRIMARY KEY,
  url text,
  started_at bigint NOT NULL,
  heartbeat_at bigint NOT NULL
);

-- Who holds each connector's one live session. session_id comes from the sequence when the claim is
-- made, so a later claim always has the larger number: the row keeps the largest, and a replica told
-- of a larger one than its own session's knows it was replaced, whichever notification came first.
CREATE SEQUENCE agent_session_claims;
CREATE TABLE agent_sessions (
  connector_id text PRIMARY KEY,
  replica_id text NOT NULL,
  session_id bigint NOT NULL,
  remote_address text NOT NULL,
  connected_at bigint NOT NULL
);
CREATE INDEX agent_sessions_replica ON agent_sessions (replica_id);
