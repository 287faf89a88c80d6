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

-- Exact customer counts per source, kept by statement-level triggers so `total` and
-- `totalCount` cost one row read instead of a scan. One UPDATE per statement (not per
-- row), so a bulk upsert of 100,000 rows adds a single counter update.
CREATE TABLE customer_counts (
    source TEXT PRIMARY KEY,
    total  BIGINT NOT NULL CHECK (total >= 0)
);
INSERT INTO customer_counts (source, total)
VALUES ('ACCOUNTS', 0), ('CRM', 0), ('SHOP', 0), ('PROFILES', 0);

CREATE FUNCTION customer_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE customer_counts AS c SET total = c.total + n.added
    FROM (SELECT source, count(*) AS added FROM inserted_rows GROUP BY source) AS n
    WHERE c.source = n.source;
    RETURN NULL;
END $$;

CREATE FUNCTION customer_counts_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE customer_counts AS c SET total = c.total - n.removed
    FROM (SELECT source, count(*) AS removed FROM deleted_rows GROUP BY source) AS n
    WHERE c.source = n.source;
    RETURN NULL;
END $$;

CREATE FUNCTION customer_counts_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE customer_counts SET total = 0;
    RETURN NULL;
END $$;

-- For INSERT ... ON CONFLICT DO UPDATE, only the rows really inserted are in `inserted_rows`.
CREATE TRIGGER customers_count_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_counts_add();
CREATE TRIGGER customers_count_delete AFTER DELETE ON customers
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_counts_remove();
CREATE TRIGGER customers_count_truncate AFTER TRUNCATE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION customer_counts_reset();

-- The counts above rely on a row never moving between sources.
CREATE FUNCTION customers_source_is_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.source IS DISTINCT FROM OLD.source THEN
        RAISE EXCEPTION 'customers.source cannot change (% -> %)', OLD.source, NEW.source;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER customers_source_immutable BEFORE UPDATE OF source ON customers
    FOR EACH ROW EXECUTE FUNCTION customers_source_is_immutable();
