-- tests/migrations for MySQL, whose TEXT columns cannot be UNIQUE without a length.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name VARCHAR(200) NOT NULL UNIQUE
);
CREATE TABLE posts (
    id INTEGER PRIMARY KEY,
    author_id INTEGER NOT NULL REFERENCES users (id),
    title TEXT NOT NULL
);
