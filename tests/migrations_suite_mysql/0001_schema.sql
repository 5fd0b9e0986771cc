-- tests/migrations_suite for MySQL: no TEXT keys without a length, no deferred keys.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name VARCHAR(200) NOT NULL UNIQUE
) ENGINE = InnoDB;
CREATE TABLE posts (
    id INTEGER PRIMARY KEY,
    author_id INTEGER NOT NULL,
    title TEXT NOT NULL,
    FOREIGN KEY (author_id) REFERENCES users (id)
) ENGINE = InnoDB;
CREATE TABLE notes (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    body TEXT NOT NULL,
    CONSTRAINT notes_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB;
