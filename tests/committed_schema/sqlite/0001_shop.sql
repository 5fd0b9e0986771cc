CREATE TABLE customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    item TEXT NOT NULL
);
-- No rowid alias: a rewritten row gets a new rowid, which shows whether a table was restored.
CREATE TABLE notes (
    id INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE tickets (
    id INTEGER PRIMARY KEY,
    order_id INTEGER REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE totals (
    id INTEGER PRIMARY KEY,
    qty INTEGER NOT NULL,
    price INTEGER NOT NULL,
    total INTEGER GENERATED ALWAYS AS (qty * price) STORED
);
