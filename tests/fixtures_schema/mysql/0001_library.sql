CREATE TABLE authors (
    id INTEGER AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(200) NOT NULL UNIQUE,
    born DATE,
    active BOOLEAN NOT NULL DEFAULT TRUE
) ENGINE = InnoDB;
CREATE TABLE books (
    id INTEGER PRIMARY KEY,
    author_id INTEGER NOT NULL,
    title TEXT NOT NULL,
    price DECIMAL(8, 2),
    tags JSON,
    FOREIGN KEY (author_id) REFERENCES authors (id)
) ENGINE = InnoDB;
CREATE TABLE employees (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    manager_id INTEGER,
    FOREIGN KEY (manager_id) REFERENCES employees (id)
) ENGINE = InnoDB;
CREATE TABLE players (
    id INTEGER PRIMARY KEY,
    team_id INTEGER NOT NULL,
    name TEXT NOT NULL
) ENGINE = InnoDB;
CREATE TABLE teams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    captain_id INTEGER,
    FOREIGN KEY (captain_id) REFERENCES players (id)
) ENGINE = InnoDB;
ALTER TABLE players ADD CONSTRAINT players_team_fk FOREIGN KEY (team_id) REFERENCES teams (id);
CREATE TABLE library_author (id INTEGER AUTO_INCREMENT PRIMARY KEY, name TEXT NOT NULL) ENGINE = InnoDB;
CREATE TABLE library_tag (id INTEGER AUTO_INCREMENT PRIMARY KEY, label TEXT NOT NULL) ENGINE = InnoDB;
CREATE TABLE library_book (
    id INTEGER AUTO_INCREMENT PRIMARY KEY,
    title TEXT NOT NULL,
    author_id INTEGER NOT NULL,
    published DATE,
    FOREIGN KEY (author_id) REFERENCES library_author (id)
) ENGINE = InnoDB;
CREATE TABLE library_book_tags (
    id INTEGER AUTO_INCREMENT PRIMARY KEY,
    book_id INTEGER NOT NULL,
    tag_id INTEGER NOT NULL,
    FOREIGN KEY (book_id) REFERENCES library_book (id),
    FOREIGN KEY (tag_id) REFERENCES library_tag (id)
) ENGINE = InnoDB;
