-- A user's tables with names like testdb's own: all of them are the user's, and treated so.
CREATE TABLE testdb_audit (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    event TEXT NOT NULL
) ENGINE = InnoDB;
CREATE TABLE `TestDB_Mixed` (
    id INT PRIMARY KEY,
    audit_id BIGINT,
    note TEXT,
    FOREIGN KEY (audit_id) REFERENCES testdb_audit (id)
) ENGINE = InnoDB;
-- The usual names of committed isolation's registry and first copy, of a template's setup
-- table, and those of testdb's bookkeeping before it was told apart by its comment.
CREATE TABLE testdb_registry (name TEXT) ENGINE = InnoDB;
CREATE TABLE testdb_baseline_0 (name TEXT) ENGINE = InnoDB;
CREATE TABLE testdb_setup (value TEXT) ENGINE = InnoDB;
CREATE TABLE testdb_tables (name TEXT) ENGINE = InnoDB;
CREATE TABLE testdb_written (name TEXT) ENGINE = InnoDB;
-- The usual names of the triggers that record writes to the first tables: these refuse some.
CREATE TRIGGER testdb_written_0_i BEFORE INSERT ON testdb_audit FOR EACH ROW
    IF NEW.event = 'forbidden' THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'forbidden event';
    END IF;
CREATE TRIGGER testdb_written_1_i BEFORE INSERT ON `TestDB_Mixed` FOR EACH ROW
    IF NEW.note = 'forbidden' THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'forbidden note';
    END IF;
