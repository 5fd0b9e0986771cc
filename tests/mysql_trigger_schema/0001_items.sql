-- A user's trigger that writes another table: it fires when a restore empties `items`, too.
CREATE TABLE items (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL
) ENGINE = InnoDB;
CREATE TABLE item_log (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    what TEXT NOT NULL
) ENGINE = InnoDB;
CREATE TRIGGER items_logged AFTER DELETE ON items FOR EACH ROW
    INSERT INTO item_log (what) VALUES (CONCAT('deleted ', OLD.id));
INSERT INTO items VALUES (1, 'one'), (2, 'two');
