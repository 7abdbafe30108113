-- Host health (SPEC §2.8): each host's failing resources as its agent last reported them (the
-- set is complete in every ack and report, so a resource missing from it is not failing), and
-- a bounded list of recent events per host. Both go with their host.
CREATE TABLE host_failing (
    host_id    TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    resource   TEXT NOT NULL,              -- `service/ss`, `user/alice@ss`, `host/firewall`, ...
    message    TEXT NOT NULL,              -- the agent's error, bounded in length
    first_seen INTEGER NOT NULL,           -- controller clock, unix seconds
    last_seen  INTEGER NOT NULL,           -- written at most once a minute unless changed
    PRIMARY KEY (host_id, resource)
) STRICT, WITHOUT ROWID;

-- `failing`, `recovered`, `repaired`, `online`, `offline`; the newest 100 per host are kept.
CREATE TABLE host_events (
    id       INTEGER PRIMARY KEY,          -- insertion order: newest has the largest id
    host_id  TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    at       INTEGER NOT NULL,             -- controller clock, unix seconds
    kind     TEXT NOT NULL,
    resource TEXT,
    message  TEXT NOT NULL
) STRICT;
CREATE INDEX host_events_host ON host_events (host_id, id);
