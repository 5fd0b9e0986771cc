-- A generated column: dumps leave it out, loads recompute it.
CREATE TABLE priced (
    id INTEGER PRIMARY KEY,
    price NUMERIC NOT NULL,
    doubled NUMERIC GENERATED ALWAYS AS (price * 2) STORED
);
