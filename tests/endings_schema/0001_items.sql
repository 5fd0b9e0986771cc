CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
INSERT INTO items (id, note) VALUES (1000, 'baseline');
