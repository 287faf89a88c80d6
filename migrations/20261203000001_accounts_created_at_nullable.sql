-- An accounts record whose upstream `created_at` is null, missing, empty, a date only or
-- unreadable has no creation time: it is stored as NULL and answered as null, as the
-- original pipeline did (see README, Compatibility notes: accounts). Every other source
-- still always has one (its upstream's, or the `now()` default when we first store it).
ALTER TABLE customers
    ALTER COLUMN created_at DROP NOT NULL,
    ADD CONSTRAINT customers_created_at_known CHECK (created_at IS NOT NULL OR source = 'ACCOUNTS');
