CREATE TABLE counters (id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT NOT NULL);
CREATE TABLE parents (id INTEGER PRIMARY KEY);
-- Deferred, declared across lines and in lower case.
CREATE TABLE late_children (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parents (id)
        deferrable
        initially    deferred
);
-- Immediate.
CREATE TABLE children (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parents (id)
);
