-- Purchases of the shop's customer management system: written by `POST /buy` (with their
-- outbox event for Kafka, in one transaction) and by the purchases consumer for messages
-- other producers put on the topic.

CREATE TABLE purchases (
    id           BIGSERIAL PRIMARY KEY,
    username     TEXT NOT NULL CHECK (length(username) BETWEEN 1 AND 64),
    userid       TEXT NOT NULL CHECK (length(userid) BETWEEN 1 AND 64),
    price        NUMERIC(12, 2) NOT NULL CHECK (price >= 0),
    purchased_at TIMESTAMPTZ NOT NULL,
    -- What makes this purchase one: our event id for `POST /buy` and our own messages,
    -- `kafka:<topic>/<partition>/<offset>` for a foreign producer's message.
    source_key   TEXT NOT NULL UNIQUE CHECK (length(source_key) BETWEEN 1 AND 512),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX purchases_username_idx ON purchases (username, id);
