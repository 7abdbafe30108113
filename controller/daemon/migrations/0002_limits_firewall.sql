-- Bandwidth limits and the managed firewall (SPEC §2.5).
-- Rates are bits per second, NULL meaning unlimited; `down` is traffic to the user (host egress),
-- `up` traffic from the user (host ingress).

ALTER TABLE users ADD COLUMN bandwidth_down INTEGER CHECK (bandwidth_down > 0);
ALTER TABLE users ADD COLUMN bandwidth_up INTEGER CHECK (bandwidth_up > 0);

-- A service's cap applies to the whole service on each of its hosts.
ALTER TABLE services ADD COLUMN bandwidth_down INTEGER CHECK (bandwidth_down > 0);
ALTER TABLE services ADD COLUMN bandwidth_up INTEGER CHECK (bandwidth_up > 0);
-- New connections per second admitted per source address; NULL: not limited.
ALTER TABLE services ADD COLUMN new_conn_rate INTEGER CHECK (new_conn_rate > 0);

-- Block-list entries. A host's firewall policy is every fleet-wide rule plus its own.
CREATE TABLE firewall_rules (
    id         INTEGER PRIMARY KEY,
    target     TEXT NOT NULL,                                  -- normalized CIDR: 203.0.113.7/32
    host_id    TEXT REFERENCES hosts (id) ON DELETE CASCADE,   -- NULL: every host, later ones too
    created_at INTEGER NOT NULL
) STRICT;
-- One rule per target and scope; NULLs are distinct in a UNIQUE constraint, hence the expression.
CREATE UNIQUE INDEX firewall_rules_scope ON firewall_rules (target, coalesce(host_id, ''));
CREATE INDEX firewall_rules_host ON firewall_rules (host_id);
