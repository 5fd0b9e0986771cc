CREATE TABLE posts (id INTEGER PRIMARY KEY, author_id INTEGER REFERENCES users (id));
INSERT INTO no_such_table VALUES (1);
