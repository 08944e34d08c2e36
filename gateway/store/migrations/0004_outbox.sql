-- Guichet store, version 4: the outbox keeps a case's order and the operator's dead letters
-- (docs/delivery.md).
-- A delivery knows its case (messages.subject), so that the claim hands a receiver the messages
-- of one case in the order they were accepted; rows older than this version get it from their
-- message. A dead letter the operator sets aside is 'discarded', with the reason and the time;
-- nothing is ever deleted. A finished row (delivered, dead) keeps when it finished as its
-- next_attempt_at.
ALTER TABLE deliveries ADD COLUMN subject TEXT;
UPDATE deliveries SET subject = (SELECT m.subject FROM messages m WHERE m.id = deliveries.message_id);
ALTER TABLE deliveries ADD COLUMN discard_reason TEXT;
ALTER TABLE deliveries ADD COLUMN discarded_at TEXT;
-- The claim's test "an earlier delivery of this case to this receiver still unfinished".
CREATE INDEX deliveries_case_order ON deliveries (receiver, subject, id);
