-- Up Migration

-- Documents every replica shares whole (the identity signing keys), sealed with the server secret
-- (AES-256-GCM, the same secret every replica is given): the table never holds one in clear.
-- `version` rises by one on every write; a writer names the version it read, so two replicas
-- writing at once cannot both win (the loser reads again and retries).
CREATE TABLE server_documents (
  name text PRIMARY KEY,
  body text NOT NULL,
  version bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Each committed write wakes the other replicas (the payload is the name and the new version; a
-- notification from a rolled-back write is never delivered).
CREATE FUNCTION server_documents_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('server_documents', NEW.name || ' ' || NEW.version);
  RETURN NULL;
END;
$$;
CREATE TRIGGER server_documents_changed AFTER INSERT OR UPDATE ON server_documents
  FOR EACH ROW EXECUTE FUNCTION server_documents_notify();
