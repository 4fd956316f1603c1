-- baton:additive
-- Idempotent publish: an Idempotency-Key stored in the publishing
-- transaction, so that a retry on any instance finds it.
--
-- Additive: a new table and a new function; baton_publish() is untouched,
-- so an older batond runs on this schema as before (and ignores keys).

CREATE TABLE publish_keys (
    key             text        PRIMARY KEY,
    topic           text        NOT NULL,
    -- sha256 of the payload as stored: the same key with another body is
    -- refused, and the body itself is not kept twice.
    payload_sha256  bytea       NOT NULL,
    id              bigint      NOT NULL,
    ts              text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- Expired keys are deleted oldest first, in bounded batches.
CREATE INDEX publish_keys_created_at ON publish_keys (created_at);

-- baton_publish_keyed(batch, notify, ttl): like baton_publish(), for a
-- batch of {"topic": text, "key": text, "data": any JSON} whose keys are
-- distinct (batond never puts one key twice in a batch).
--
-- One row per element, by its position in the batch (ord, from 1):
--   'new'       stored now, with its id and the commit time;
--   'repeat'    the key was used within ttl for this topic and payload:
--               the original id and time, nothing stored;
--   'conflict'  the key was used within ttl for another topic or payload.
-- A key older than ttl counts as unused, and is taken over.
--
-- Locks: topics first, in name order (as baton_publish() does, so the
-- two never deadlock), then keys, in key order; ids are then handed out
-- in batch order, so each topic's ids commit in increasing order.
CREATE FUNCTION baton_publish_keyed(batch json, notify boolean, ttl interval)
RETURNS TABLE (ord integer, topic text, id bigint, ts text, outcome text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
    existing record;
    claimed boolean;
    fresh integer[] := '{}';
    new_id bigint;
    stamp text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
BEGIN
    FOR r IN
        SELECT t.name
        FROM (SELECT DISTINCT e->>'topic' AS name FROM json_array_elements(batch) AS e) AS t
        ORDER BY t.name COLLATE "C"
    LOOP
        INSERT INTO topics (name) VALUES (r.name) ON CONFLICT (name) DO NOTHING;
        PERFORM 1 FROM topics WHERE name = r.name FOR UPDATE;
    END LOOP;

    FOR r IN
        SELECT x.ord::integer AS ord, x.e->>'topic' AS topic, x.e->>'key' AS key,
               sha256(convert_to((x.e->'data')::text, 'UTF8')) AS hash
        FROM json_array_elements(batch) WITH ORDINALITY AS x(e, ord)
        ORDER BY x.e->>'key' COLLATE "C"
    LOOP
        claimed := false;
        INSERT INTO publish_keys AS p (key, topic, payload_sha256, id, ts)
            VALUES (r.key, r.topic, r.hash, 0, '')
            ON CONFLICT (key) DO UPDATE
                SET topic = EXCLUDED.topic, payload_sha256 = EXCLUDED.payload_sha256,
                    id = 0, ts = '', created_at = now()
                WHERE p.created_at < now() - ttl
            RETURNING true INTO claimed;
        IF claimed THEN
            fresh := fresh || r.ord;
            CONTINUE;
        END IF;
        SELECT p.topic, p.payload_sha256, p.id, p.ts INTO existing
            FROM publish_keys AS p WHERE p.key = r.key;
        ord := r.ord;
        topic := r.topic;
        IF existing.topic = r.topic AND existing.payload_sha256 = r.hash THEN
            id := existing.id;
            ts := existing.ts;
            outcome := 'repeat';
        ELSE
            id := NULL;
            ts := NULL;
            outcome := 'conflict';
        END IF;
        RETURN NEXT;
    END LOOP;

    FOR r IN
        SELECT x.ord::integer AS ord, x.e->>'topic' AS topic, x.e->>'key' AS key, x.e->'data' AS data
        FROM json_array_elements(batch) WITH ORDINALITY AS x(e, ord)
        WHERE x.ord = ANY (fresh)
        ORDER BY x.ord
    LOOP
        UPDATE topics SET last_id = last_id + 1 WHERE name = r.topic RETURNING last_id INTO new_id;
        INSERT INTO events (topic, id, payload) VALUES (r.topic, new_id, r.data);
        UPDATE publish_keys SET id = new_id, ts = stamp WHERE key = r.key;
        IF notify THEN
            PERFORM pg_notify('baton_events', r.topic || ' ' || new_id || ' ' || new_id);
        END IF;
        ord := r.ord;
        topic := r.topic;
        id := new_id;
        ts := stamp;
        outcome := 'new';
        RETURN NEXT;
    END LOOP;
END
$$;
