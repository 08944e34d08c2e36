-- Guichet store, version 5: the outbox's unfinished rows, by id.
-- A claim takes the oldest due rows; without this index it walked the primary key through every
-- row ever delivered (and, on PostgreSQL, every dead version an update left), so each claim
-- grew slower as the hub lived on. Finished rows (delivered, dead, discarded) are not in it.
CREATE INDEX deliveries_unfinished ON deliveries (id)
    WHERE state IN ('pending', 'delivering', 'retrying')
