-- One event pipeline for every broker.
--
-- Outbox rows say where they go and how: the broker (`rabbitmq`, `kafka`), the destination
-- on it (exchange or topic), the message key (routing key or partition key), the headers
-- the message carries, and the body exactly as it is sent. Every event gets a UUID (v7 for
-- new rows) that no foreign publisher's small integer ids can collide with.
--
-- Consumers share one inbox ledger, `processed_events`, written in the same transaction as
-- the effect.

ALTER TABLE outbox_events
    ADD COLUMN event_id    UUID,
    ADD COLUMN broker      TEXT,
    ADD COLUMN destination TEXT,
    ADD COLUMN message_key TEXT,
    ADD COLUMN headers     JSONB;

-- Rows written before this upgrade were order events for the default exchange. They keep
-- their body (rebuilt in the message's key order, which JSONB did not keep) and get an id.
UPDATE outbox_events
SET event_id    = gen_random_uuid(),
    broker      = 'rabbitmq',
    destination = 'orders.v1',
    message_key = event_type;

UPDATE outbox_events
SET headers = jsonb_strip_nulls(jsonb_build_object(
        'id', event_id::text,
        'content-type', 'application/json',
        'type', event_type,
        'traceparent', traceparent));

-- The body is sent byte for byte as stored: `json` keeps the text (and its key order).
ALTER TABLE outbox_events
    ALTER COLUMN payload TYPE JSON USING (
        CASE WHEN event_type = 'order.created' THEN json_build_object(
            'order_id', payload -> 'order_id',
            'customer_id', payload -> 'customer_id',
            'product_name', payload -> 'product_name',
            'quantity', payload -> 'quantity',
            'price', payload -> 'price',
            'status', payload -> 'status',
            'event_id', payload -> 'event_id',
            'occurred_at', payload -> 'occurred_at')
        ELSE payload::json END);

ALTER TABLE outbox_events
    ALTER COLUMN event_id SET NOT NULL,
    ALTER COLUMN broker SET NOT NULL,
    ALTER COLUMN destination SET NOT NULL,
    ALTER COLUMN headers SET NOT NULL,
    ADD CONSTRAINT outbox_events_event_id_key UNIQUE (event_id),
    ADD CONSTRAINT outbox_events_broker_check CHECK (broker IN ('rabbitmq', 'kafka')),
    ADD CONSTRAINT outbox_events_destination_check CHECK (length(destination) BETWEEN 1 AND 255),
    ADD CONSTRAINT outbox_events_headers_check CHECK (jsonb_typeof(headers) = 'object'),
    DROP COLUMN traceparent;

DROP INDEX outbox_events_due_idx;
CREATE INDEX outbox_events_due_idx ON outbox_events (broker, next_attempt_at, id)
    WHERE status = 'pending';

-- One inbox ledger for every consumer: what each has applied, keyed by the event's identity
-- (our UUID, or for foreign publishers what their messages carry, namespaced).
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL CHECK (length(consumer) BETWEEN 1 AND 64),
    event_key    TEXT NOT NULL CHECK (length(event_key) BETWEEN 1 AND 512),
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_key)
);

-- What the orders consumer applied before the upgrade was keyed on the body's `event_id`
-- alone; that is how foreign messages are keyed from now on.
INSERT INTO processed_events (consumer, event_key, processed_at)
SELECT 'orders', 'event_id:' || event_id, processed_at FROM processed_order_events;

-- A row the consumer already applied was published (the relay died before marking it):
-- mark it, so it does not go out a second time under its new id.
UPDATE outbox_events
SET status = 'processed', processed_at = now(), updated_at = now()
WHERE status IN ('pending', 'processing')
  AND id::text IN (SELECT event_id FROM processed_order_events);

DROP TABLE processed_order_events;
