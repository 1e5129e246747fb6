-- Up Migration

-- Newest first among security events: the console's "security events" view and `audit --security`
-- ask for a few dozen of them, which are rare among the log's rows (connects, reports), and without
-- an index of their own were found by reading the whole log backwards: seconds on a log of millions.
CREATE INDEX audit_events_security_at ON audit_events (at DESC, seq DESC) WHERE security;
