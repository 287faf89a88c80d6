-- Customer search on PostgreSQL (used when MEILI_URL is unset): trigram word similarity
-- over names and emails, typo-tolerant and prefix-aware. Records with no name and no
-- email have no search text, so they are left out, as the original's index did.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- IMMUTABLE for a generated column; array_to_string over text[] does not depend on
-- any setting.
CREATE FUNCTION hub_search_text(first_name TEXT, last_name TEXT, emails TEXT[])
RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(lower(trim(concat_ws(' ', first_name, last_name, array_to_string(emails, ' ')))), '')
$$;

ALTER TABLE customers
    ADD COLUMN search_text TEXT GENERATED ALWAYS AS (hub_search_text(first_name, last_name, emails)) STORED;

CREATE INDEX customers_search_text_trgm_idx ON customers USING GIN (search_text gin_trgm_ops);
