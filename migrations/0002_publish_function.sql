-- baton_publish(batch, notify): stores a batch of events in one round trip.
--
-- batch is a JSON array of {"topic": text, "data": any JSON}. Events get
-- per-topic ids in batch order. Topics are locked one at a time in name
-- order, so two instances publishing batches that share topics can never
-- deadlock, and each topic's ids commit in increasing order (see 0001).
--
-- Returns one row per topic: the first id it got, how many, and the commit
-- timestamp as text (the same text the history and the streams show).
-- With notify, each topic's new id range is announced on the channel
-- baton_events as "topic first_id last_id" (a hint: payloads can exceed
-- NOTIFY's 8000 bytes, so listeners read the events themselves).

CREATE FUNCTION baton_publish(batch json, notify boolean)
RETURNS TABLE (topic text, first_id bigint, n integer, ts text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    base bigint;
    stamp text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
BEGIN
    FOR r IN
        SELECT e->>'topic' AS name, count(*)::integer AS count
        FROM json_array_elements(batch) AS e
        GROUP BY 1
        ORDER BY (e->>'topic') COLLATE "C"
    LOOP
        INSERT INTO topics (name) VALUES (r.name) ON CONFLICT (name) DO NOTHING;
        UPDATE topics SET last_id = last_id + r.count
            WHERE name = r.name
            RETURNING last_id - r.count INTO base;
        INSERT INTO events (topic, id, payload)
            SELECT r.name, base + row_number() OVER (ORDER BY x.ord), x.e->'data'
            FROM json_array_elements(batch) WITH ORDINALITY AS x(e, ord)
            WHERE x.e->>'topic' = r.name;
        IF notify THEN
            PERFORM pg_notify('baton_events', r.name || ' ' || (base + 1) || ' ' || (base + r.count));
        END IF;
        topic := r.name;
        first_id := base + 1;
        n := r.count;
        ts := stamp;
        RETURN NEXT;
    END LOOP;
END
$$;
