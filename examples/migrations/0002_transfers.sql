CREATE TABLE transfers (
    id INTEGER PRIMARY KEY,
    from_account INTEGER NOT NULL REFERENCES accounts (id),
    to_account INTEGER NOT NULL REFERENCES accounts (id),
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0)
);
