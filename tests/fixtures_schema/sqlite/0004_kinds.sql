-- A value of each type a dump must carry back exactly (SQLite's NUMERIC would round `exact`).
CREATE TABLE kinds (
    id INTEGER PRIMARY KEY,
    exact TEXT,
    doc TEXT,
    data BLOB,
    f REAL,
    label TEXT
);
