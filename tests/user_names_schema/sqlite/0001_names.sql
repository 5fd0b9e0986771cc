-- A user's tables with names like testdb's own: all of them are the user's, and treated so.
CREATE TABLE testdb_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL
);
CREATE TABLE "TestDB_Mixed" (
    id INTEGER PRIMARY KEY,
    audit_id INTEGER REFERENCES testdb_audit (id),
    note TEXT
);
-- The usual names of committed isolation's registry and of testdb_audit's baseline copy, and
-- the name of an older testdb's record of written tables.
CREATE TABLE testdb_registry (kind TEXT, name TEXT);
CREATE TABLE testdb_baseline_testdb_audit (id INTEGER);
CREATE TABLE testdb_written (name TEXT);
-- The usual name of the trigger that records inserts into testdb_audit: this one refuses some.
CREATE TRIGGER testdb_written_INSERT_testdb_audit BEFORE INSERT ON testdb_audit
WHEN NEW.event = 'forbidden'
BEGIN
    SELECT RAISE(ABORT, 'forbidden event');
END;
