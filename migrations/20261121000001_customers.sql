-- Customers from every source, one row per upstream record.
--
-- `source` + `external_id` is the natural key of each upstream (CUST001 for accounts,
-- the integer id for the CRM, ...). `external_id` uses the "C" collation so ordering is
-- byte order, identical on every server, and the unique index serves keyset pagination.
CREATE TABLE customers (
    id              BIGSERIAL PRIMARY KEY,
    source          TEXT NOT NULL CHECK (source IN ('ACCOUNTS', 'CRM', 'SHOP', 'PROFILES')),
    external_id     TEXT COLLATE "C" NOT NULL CHECK (length(external_id) BETWEEN 1 AND 255),
    first_name      TEXT,
    last_name       TEXT,
    emails          TEXT[] NOT NULL DEFAULT '{}',
    phone           TEXT,
    address         TEXT,
    date_of_birth   DATE,
    account_balance NUMERIC(15, 2),
    -- The upstream's own creation time when it has one, else the time we first stored it.
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The last time the stored content changed (an identical re-ingest leaves it alone).
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT customers_source_external_id_key UNIQUE (source, external_id)
);

CREATE INDEX customers_emails_idx ON customers USING GIN (emails);
