-- The CRM indexer's reconcile (seq-less feeds, upstream restarts).
--
-- Versions are the indexer's clock. An event at version V replaces what is older than V; a
-- read of the upstream taken at clock P (a page, a `--verify` snapshot) saw every event
-- received before it, so it also replaces what was written at P itself. NULL (a row from
-- before versions, or written by hand) loses to everything.
CREATE FUNCTION crm_write_wins(stored BIGINT, incoming BIGINT, is_read BOOLEAN)
RETURNS BOOLEAN LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN stored IS NULL OR stored < incoming OR (is_read AND stored = incoming);

-- When a clean scan last proved the table equal to the upstream, content compared.
ALTER TABLE sync_state ADD COLUMN proved_exact_at TIMESTAMPTZ;
