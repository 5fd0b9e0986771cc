-- A generated column: dumps leave it out, loads recompute it.
CREATE TABLE priced (
    id INTEGER PRIMARY KEY,
    price DECIMAL(20, 6) NOT NULL,
    doubled DECIMAL(21, 6) AS (price * 2) STORED
) ENGINE = InnoDB;
