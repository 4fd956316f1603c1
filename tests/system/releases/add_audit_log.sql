-- baton:additive
-- Release B of the schema-contract system test: a new table, which
-- binaries built before it do not know and do not mind.
CREATE TABLE audit_log (id bigserial PRIMARY KEY, note text);
