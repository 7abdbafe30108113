-- The controller's schema: hosts and their enrollment, services, users and their credentials.
-- Times are unix seconds. Host generations are bumped in the same transaction as the change
-- that touches the host, so a generation always names exactly one desired state.

CREATE TABLE hosts (
    id               TEXT PRIMARY KEY NOT NULL,  -- UUID; the identity in the agent's certificate
    name             TEXT NOT NULL UNIQUE,
    created_at       INTEGER NOT NULL,
    enrolled_at      INTEGER,
    cert_serial      TEXT,
    cert_not_after   INTEGER,
    generation       INTEGER NOT NULL DEFAULT 0,
    agent_version    TEXT,
    address          TEXT,
    last_seen        INTEGER,
    acked_generation INTEGER,
    acked_digest     TEXT
) STRICT;

-- Ids of removed hosts: their certificates stay valid until expiry, so they must be refused.
CREATE TABLE revoked_hosts (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    revoked_at INTEGER NOT NULL
) STRICT;

-- Only the SHA-256 of a join token is stored; a used token stays so a replay reads as "used".
CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    host_id    TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX join_tokens_host ON join_tokens (host_id);

CREATE TABLE services (
    name        TEXT PRIMARY KEY NOT NULL,
    protocol    TEXT NOT NULL,
    port        INTEGER NOT NULL,           -- first port of the per-user range
    port_span   INTEGER NOT NULL,           -- the range is port ..= port + port_span - 1
    next_port   INTEGER NOT NULL,           -- ports below it are held or listed in free_ports
    image       TEXT,
    options     TEXT NOT NULL,              -- JSON of ServiceOptions
    all_servers INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE service_servers (
    service TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
    host_id TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    PRIMARY KEY (service, host_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX service_servers_host ON service_servers (host_id);

CREATE TABLE users (
    id          TEXT PRIMARY KEY NOT NULL,  -- UUID
    name        TEXT NOT NULL UNIQUE,
    email       TEXT,
    note        TEXT,
    status      TEXT NOT NULL,
    all_servers INTEGER NOT NULL,
    protocols   TEXT,                       -- NULL: every protocol; else comma-separated names
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX users_status ON users (status);

CREATE TABLE user_servers (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    host_id TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, host_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX user_servers_host ON user_servers (host_id);

CREATE TABLE credentials (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
    port    INTEGER NOT NULL,
    secret  TEXT NOT NULL,
    PRIMARY KEY (user_id, service),
    UNIQUE (service, port)
) STRICT, WITHOUT ROWID;

-- Ports given back below a service's next_port, so the lowest free port is found in O(log n)
-- instead of scanning every held port.
CREATE TABLE free_ports (
    service TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
    port    INTEGER NOT NULL,
    PRIMARY KEY (service, port)
) STRICT, WITHOUT ROWID;

-- Every way a credential disappears (user removed, cascades included) returns its port, so no
-- code path can leak one. When the service itself goes, its free list goes with it.
CREATE TRIGGER credentials_free_port AFTER DELETE ON credentials
WHEN EXISTS (SELECT 1 FROM services WHERE name = OLD.service)
BEGIN
    INSERT OR IGNORE INTO free_ports (service, port) VALUES (OLD.service, OLD.port);
END;
