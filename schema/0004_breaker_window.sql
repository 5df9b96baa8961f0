-- The circuit breaker judges an actor by its recent subjects, not by a count
-- that any success resets: `recent` holds the outcomes of the actor's last
-- subjects, oldest first, one character each ('F' an actor failure, 'S' a
-- success), at most the actor's breaker window long. The breaker opens when
-- `breaker_threshold` of them are failures (docs/running.md);
-- consecutive_failures now keeps the number of 'F' in it, so ops views that
-- show it keep their meaning for a failing streak.
ALTER TABLE interp.actor_health ADD COLUMN recent text NOT NULL DEFAULT ''
    CHECK (recent ~ '^[FS]*$');
