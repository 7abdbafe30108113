-- Traffic accounting (SPEC §2.6): what each host's agent reported from its on-disk ledger,
-- applied exactly once. A batch's entries are added to the hourly totals and the host's
-- watermark moves past them in ONE transaction, so a batch is either counted and marked seen,
-- or neither; a replayed batch (its ack was lost) finds its seqs at or below the watermark and
-- changes nothing.

-- The highest seq applied per host and ledger epoch. An epoch is the ledger's random identity:
-- an agent whose ledger was lost starts a new epoch with seqs from 1 again, which must not be
-- mistaken for replays of the old one. `epoch` is the agent's u64 stored bit for bit (an
-- INTEGER is signed: epochs past 2^63 read back negative here and are cast back in Rust).
--
-- Foreign key on hosts, with cascade: a watermark only matters while its host can connect, and
-- a removed host's id is revoked for ever, so nothing of it can be replayed afterwards. It also
-- makes an ingest racing `servers remove` fail as a whole (nothing counted, nothing acked)
-- instead of counting bytes under a watermark row of a host that no longer exists.
CREATE TABLE usage_watermarks (
    host_id    TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,           -- every entry with seq <= last_seq is applied
    updated_at INTEGER NOT NULL,           -- controller clock, unix seconds
    PRIMARY KEY (host_id, epoch)
) STRICT, WITHOUT ROWID;

-- Bytes per user, host, service and hour (unix seconds floored to 3600, from the end of the
-- entry's interval on the agent's clock, never later than the controller's now).
--
-- Deliberately NO foreign keys: these rows are history. A user or host removed keeps its
-- traffic (a bill, an abuse report), and bytes of a user removed while they were in flight
-- from a partitioned host still arrive and are kept under that id; a foreign key would either
-- refuse them (and the agent would resend them for ever) or delete the history with the user.
-- Names of removed users and hosts come from `removed_users` (below) and `revoked_hosts`.
CREATE TABLE usage_hours (
    host_id    TEXT NOT NULL,              -- hosts.id
    hour       INTEGER NOT NULL,
    user_id    TEXT NOT NULL,              -- users.id (UUID), which outlives a rename
    service    TEXT NOT NULL,
    up         INTEGER NOT NULL,           -- client to server
    down       INTEGER NOT NULL,           -- server to client
    undirected INTEGER NOT NULL,           -- engines that count a port's total (ssmanager)
    -- Key order is the ingest's: one batch is one host and (mostly) one hour, so its 1,000
    -- rows sit side by side in a few pages. Keyed by user first, each batch dirtied a page per
    -- user, about 4 MB of WAL per commit: 9,000 entries/s instead of the 10,000/s the SPEC's
    -- bar needs (docs/benchmarks.md).
    PRIMARY KEY (host_id, hour, user_id, service)
) STRICT, WITHOUT ROWID;
-- `users usage --since`: reads the hours from `since` on. Its entries are (hour, host_id,
-- user_id, service), again side by side for one batch; only a new row writes it (adding to an
-- existing row leaves the index alone). There is deliberately no index by user: its entries
-- would be spread over the whole index, one random page per user and batch, the cost the key
-- order above avoids; one user's usage is read by filtering the hour range instead.
CREATE INDEX usage_hours_hour ON usage_hours (hour);

-- The name a removed user had, so its traffic stays readable (`alice (removed)`).
CREATE TABLE removed_users (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL
) STRICT;
CREATE TRIGGER users_removed_keep_name AFTER DELETE ON users
BEGIN
    INSERT OR REPLACE INTO removed_users (id, name) VALUES (old.id, old.name);
END;
