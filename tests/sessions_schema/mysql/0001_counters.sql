CREATE TABLE counters (id INTEGER AUTO_INCREMENT PRIMARY KEY, note TEXT NOT NULL) ENGINE = InnoDB;
CREATE TABLE parents (id INTEGER PRIMARY KEY) ENGINE = InnoDB;
-- MySQL defers no key: both immediate.
CREATE TABLE late_children (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL,
    FOREIGN KEY (parent_id) REFERENCES parents (id)
) ENGINE = InnoDB;
CREATE TABLE children (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL,
    FOREIGN KEY (parent_id) REFERENCES parents (id)
) ENGINE = InnoDB;
