-- Tables a dump must not double or miss: another schema, a partitioned table, inheritance.
CREATE SCHEMA inventory;
CREATE TABLE inventory.items (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE stock (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES inventory.items (id)
);
CREATE TABLE readings (
    id INTEGER NOT NULL,
    taken DATE NOT NULL,
    PRIMARY KEY (id, taken)
) PARTITION BY RANGE (taken);
CREATE TABLE readings_2024 PARTITION OF readings FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE readings_2025 PARTITION OF readings FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE animals (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE dogs (
    breed TEXT
) INHERITS (animals);
