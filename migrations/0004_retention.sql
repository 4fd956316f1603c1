-- baton:additive
-- Retention: baton_prune() deletes the oldest events of one topic, a
-- bounded batch at a time. Additive: a new function; an older batond
-- ignores it (and keeps events for ever, as it did).
--
-- baton_prune(t, max_age, max_events, batch): deletes events of topic t
-- that are older than max_age (NULL: no limit) or beyond the max_events
-- most recent ids (NULL: no limit), at most 'batch' ids at a time, always
-- a prefix of the topic's ids: what remains stays contiguous, so "older
-- than the oldest stored event" means "pruned" (a resumed stream gets
-- event: reset). Returns how many rows went, and whether more are due.
--
-- Each call is one short transaction on the (topic, id) primary key: a
-- range scan of at most 'batch' rows to find the first one young enough
-- to keep, and a range delete. It takes no lock on topics, so publishing
-- (which inserts above the last id) never waits for it.
CREATE FUNCTION baton_prune(t text, max_age interval, max_events bigint, batch integer)
RETURNS TABLE (deleted integer, more boolean)
LANGUAGE plpgsql AS $$
DECLARE
    lo bigint;
    last bigint;
    window_end bigint;
    keep_from bigint;
    young bigint;
BEGIN
    -- A lost delete is redone by the next round: no need to wait for the
    -- WAL flush, which publishers' commits queue behind.
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT min(e.id) INTO lo FROM events AS e WHERE e.topic = t;
    SELECT tp.last_id INTO last FROM topics AS tp WHERE tp.name = t;
    IF lo IS NULL OR last IS NULL THEN
        deleted := 0;
        more := false;
        RETURN NEXT;
        RETURN;
    END IF;
    window_end := lo + batch;               -- this call looks at ids [lo, window_end)

    -- By count: ids up to last - max_events go.
    keep_from := lo;
    IF max_events IS NOT NULL THEN
        keep_from := greatest(keep_from, last - max_events + 1);
    END IF;
    -- By age: ids before the first young enough one go (within the window).
    IF max_age IS NOT NULL THEN
        SELECT min(e.id) INTO young FROM events AS e
            WHERE e.topic = t AND e.id >= lo AND e.id < window_end
              AND e.created_at >= now() - max_age;
        keep_from := greatest(keep_from, coalesce(young, least(window_end, last + 1)));
    END IF;
    keep_from := least(keep_from, window_end);

    DELETE FROM events AS e WHERE e.topic = t AND e.id >= lo AND e.id < keep_from;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    more := keep_from = window_end AND window_end <= last;
    RETURN NEXT;
END
$$;
