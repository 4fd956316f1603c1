-- Release C of the schema-contract system test: a dropped column, which a
-- binary that writes it would break on. Not marked additive: breaking.
ALTER TABLE audit_log DROP COLUMN note;
