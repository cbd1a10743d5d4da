-- Charter's indexed state on PostgreSQL (migration 2): the `Store` trait's
-- namespaces, keys and values, per store (a deployment). Keys and values
-- are bytes: a key may hold any character, NUL included, and reads order
-- keys bytewise, as sled does.
CREATE TABLE charter_kv (
    store TEXT  NOT NULL,
    ns    BYTEA NOT NULL,
    key   BYTEA NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (store, ns, key)
);
