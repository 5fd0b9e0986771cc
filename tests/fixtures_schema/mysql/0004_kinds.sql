-- A value of each type a dump must carry back exactly.
CREATE TABLE kinds (
    id INTEGER PRIMARY KEY,
    exact DECIMAL(40, 20),
    doc JSON,
    data BLOB,
    f DOUBLE,
    label TEXT
) ENGINE = InnoDB;
