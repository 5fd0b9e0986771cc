-- Django's db_column renames: mixed-case columns, found without configuration.
CREATE TABLE chinook_invoice (
    `InvoiceId` INTEGER PRIMARY KEY,
    `InvoiceDate` TEXT NOT NULL,
    `Total` DECIMAL(10, 2) NOT NULL,
    `Note` TEXT
) ENGINE = InnoDB;
