-- A value of each type a dump must carry back exactly.
CREATE TABLE kinds (
    id INTEGER PRIMARY KEY,
    exact NUMERIC,
    doc JSONB,
    nums INTEGER[],
    words TEXT[],
    data BYTEA,
    f DOUBLE PRECISION,
    label TEXT
);
