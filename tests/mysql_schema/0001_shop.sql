CREATE TABLE users (
    id INTEGER AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(100) NOT NULL UNIQUE,
    joined DATETIME NULL
) ENGINE = InnoDB;

CREATE TABLE orders (
    id INTEGER AUTO_INCREMENT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    total DECIMAL(10, 2) NOT NULL,
    label VARCHAR(40) AS (CONCAT('order ', id)) VIRTUAL,
    CONSTRAINT orders_user FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB;

CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;
