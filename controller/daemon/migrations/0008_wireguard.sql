-- WireGuard (issue 9): keys and tunnel addresses are per user *per server*, the interface key
-- per host and service. Rows are made on demand (a user or service placed on a host, a host's
-- first full state) and deleted only with what they belong to: an address is never reused while
-- its peer row exists, and is free again once it is gone.

-- One interface per (service, host). The controller generates and keeps the key: see
-- docs/WIREGUARD.md ("Where keys are made").
CREATE TABLE wg_interfaces (
    service     TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
    host_id     TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    private_key TEXT NOT NULL,              -- standard base64; sent only to that host
    public_key  TEXT NOT NULL,
    PRIMARY KEY (service, host_id)
) STRICT, WITHOUT ROWID;

-- One peer per (user, service, host). The client's private key stays here (to print the
-- `.conf`); the host only gets the public key, the preshared key and the allowed IPs.
CREATE TABLE wg_peers (
    user_id       TEXT NOT NULL,
    service       TEXT NOT NULL,
    host_id       TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    address_index INTEGER NOT NULL,         -- offset in the service's subnet(s); the server is 1
    private_key   TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    preshared_key TEXT NOT NULL,
    PRIMARY KEY (user_id, service, host_id),
    UNIQUE (service, host_id, address_index),
    FOREIGN KEY (user_id, service) REFERENCES credentials (user_id, service) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX wg_peers_host ON wg_peers (host_id, service);
