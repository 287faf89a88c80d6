-- Orders of the shop (seed 004), their transactional outbox, and the consumer's record of
-- applied events.

-- How many orders each shop customer has, kept by the `order.created` consumer.
ALTER TABLE customers
    ADD COLUMN orders_count BIGINT NOT NULL DEFAULT 0 CHECK (orders_count >= 0);

-- The customer service's ten seed customers (ids 1..10).
INSERT INTO customers (source, external_id, first_name, last_name, emails, address, created_at)
VALUES
    ('SHOP', '1', 'Alice', 'Johnson', '{alice.johnson@example.com}', '12 Elm St, Springfield', '2024-01-01T09:00:00Z'),
    ('SHOP', '2', 'Bob', 'Smith', '{bob.smith@example.com}', '34 Oak Ave, Riverside', '2024-01-01T09:00:00Z'),
    ('SHOP', '3', 'Carol', 'Williams', '{carol.williams@example.com}', '56 Pine Rd, Fairview', '2024-01-01T09:00:00Z'),
    ('SHOP', '4', 'David', 'Brown', '{david.brown@example.com}', '78 Maple Dr, Madison', '2024-01-01T09:00:00Z'),
    ('SHOP', '5', 'Emma', 'Davis', '{emma.davis@example.com}', '90 Cedar Ln, Georgetown', '2024-01-01T09:00:00Z'),
    ('SHOP', '6', 'Frank', 'Miller', '{frank.miller@example.com}', '11 Birch Ct, Clinton', '2024-01-01T09:00:00Z'),
    ('SHOP', '7', 'Grace', 'Wilson', '{grace.wilson@example.com}', '13 Walnut St, Salem', '2024-01-01T09:00:00Z'),
    ('SHOP', '8', 'Henry', 'Moore', '{henry.moore@example.com}', '15 Spruce Way, Franklin', '2024-01-01T09:00:00Z'),
    ('SHOP', '9', 'Ivy', 'Taylor', '{ivy.taylor@example.com}', '17 Willow Pl, Greenville', '2024-01-01T09:00:00Z'),
    ('SHOP', '10', 'Jack', 'Anderson', '{jack.anderson@example.com}', '19 Aspen Blvd, Bristol', '2024-01-01T09:00:00Z')
ON CONFLICT (source, external_id) DO NOTHING;

CREATE TABLE orders (
    id                  BIGSERIAL PRIMARY KEY,
    -- The shop customer's id: customers.external_id of source SHOP.
    customer_id         BIGINT NOT NULL,
    product_name        TEXT NOT NULL CHECK (length(product_name) BETWEEN 1 AND 255),
    quantity            INTEGER NOT NULL CHECK (quantity >= 0),
    price               NUMERIC(12, 2) NOT NULL CHECK (price >= 0),
    status              TEXT NOT NULL
                        CHECK (status IN ('pending', 'processing', 'completed', 'cancelled')),
    -- A client's `Idempotency-Key`; the same key always means the same order.
    idempotency_key     TEXT UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- The normalized request the key was first used with, to refuse reuse with another body.
    request_fingerprint TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_idx ON orders (customer_id, id DESC);

-- Events to publish, written in the same transaction as the change they announce.
CREATE TABLE outbox_events (
    id              BIGSERIAL PRIMARY KEY,
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'processed', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    error_message   TEXT,
    -- W3C trace context of the request that wrote the event.
    traceparent     TEXT,
    processed_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX outbox_events_due_idx ON outbox_events (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_events_failed_idx ON outbox_events (id) WHERE status = 'failed';

-- Events the order.created consumer has applied: a replay changes nothing.
CREATE TABLE processed_order_events (
    event_id     TEXT PRIMARY KEY,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
