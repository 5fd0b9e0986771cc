CREATE TABLE customers (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(100) NOT NULL UNIQUE
) ENGINE = InnoDB;
CREATE TABLE orders (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    customer_id BIGINT NOT NULL,
    item TEXT NOT NULL,
    CONSTRAINT orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
        ON DELETE CASCADE
) ENGINE = InnoDB;
CREATE TABLE notes (
    id BIGINT PRIMARY KEY,
    body TEXT NOT NULL
) ENGINE = InnoDB;
-- MySQL has no deferred constraints: an immediate key.
CREATE TABLE tickets (
    id BIGINT PRIMARY KEY,
    order_id BIGINT NULL,
    CONSTRAINT tickets_order FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB;
CREATE TABLE totals (
    id BIGINT PRIMARY KEY,
    qty INTEGER NOT NULL,
    price INTEGER NOT NULL,
    total INTEGER AS (qty * price) STORED
) ENGINE = InnoDB;
