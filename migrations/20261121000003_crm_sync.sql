-- State of the CRM indexer (seed 000): per-record versions, tombstones and scan progress.

-- The upstream change `seq` the row reflects (CRM rows; NULL for other sources). A change
-- older than the row's version is ignored, so events and pages can arrive in any order.
ALTER TABLE customers ADD COLUMN source_version BIGINT;
-- The scan that last saw the row upstream; a clean scan deletes rows it did not see.
ALTER TABLE customers ADD COLUMN seen_in_scan BIGINT;

-- Records deleted upstream, with the version of the deletion, so a page fetched before
-- the deletion cannot bring them back.
CREATE TABLE customer_tombstones (
    source      TEXT NOT NULL,
    external_id TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    deleted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, external_id)
);

-- One row per synced source: the feed position and the scan in progress (to resume it).
CREATE TABLE sync_state (
    source            TEXT PRIMARY KEY,
    -- Highest feed seq applied.
    last_seq          BIGINT NOT NULL DEFAULT 0,
    -- The scan in progress (NULL: none) and the pages of it already stored.
    scan_id           BIGINT,
    scan_pages_done   INTEGER[] NOT NULL DEFAULT '{}',
    -- Whether the scan in progress can no longer prove a consistent snapshot.
    scan_dirty        BOOLEAN NOT NULL DEFAULT false,
    -- Set when events may have been missed (gap, reconnect, restart): a resync is due.
    resync_needed     BOOLEAN NOT NULL DEFAULT true,
    -- The feed seq at which the last clean scan proved the table exact.
    consistent_at_seq BIGINT,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO sync_state (source) VALUES ('CRM');

-- Scan ids: every full read of the CRM gets a new one.
CREATE SEQUENCE crm_scan_id_seq;
