-- The event API's storage: topics and their events.
--
-- Event ids are per topic and handed out by bumping topics.last_id inside the
-- publishing transaction. The row lock on the topic serialises publishers of
-- one topic, so ids of a topic become visible (commit) in increasing order:
-- a subscriber that has seen id N can never later find a committed N-1. A
-- global sequence would not give that (nextval() order is not commit order).

CREATE TABLE topics (
    name        text        PRIMARY KEY
                            CHECK (name ~ '^[A-Za-z0-9_-]{1,128}$'),
    last_id     bigint      NOT NULL DEFAULT 0 CHECK (last_id >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    topic       text        NOT NULL REFERENCES topics (name),
    id          bigint      NOT NULL CHECK (id > 0),
    -- json, not jsonb: replayed events must be byte-identical to the live ones.
    payload     json        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, id)
);
