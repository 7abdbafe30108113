-- Quotas and time (SPEC §2.6): one row per user with what is enforced and what it is measured
-- against. Kept apart from `users` on purpose: every usage batch updates the row of each user
-- it carries, and a narrow row (no name, email or note) keeps that write to a few pages per
-- batch (docs/benchmarks.md).
--
-- `users.status` holds the evaluated status: `active` and `on_hold` users are in their hosts'
-- desired states, `suspended` (an operator's), `limited` and `expired` users are not. The
-- controller re-evaluates a user on every ingest that moves its counter past the limit or
-- starts its hold, and at `next_check` (a reset, an expiry, a hold's timeout).
CREATE TABLE user_quota (
    user_id            TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    data_limit         INTEGER CHECK (data_limit >= 0),  -- bytes per period; NULL: unlimited
    reset              TEXT NOT NULL DEFAULT 'none',     -- none | day | week | month | year
    -- Start of the period `used` counts (controller's time zone), NULL for `none`. An ingest
    -- or a check that finds it older than the current period's start starts `used` again.
    period_start       INTEGER,
    used               INTEGER NOT NULL DEFAULT 0,       -- bytes in the period, every host
    first_use          INTEGER,                          -- first traffic on any host
    expires_at         INTEGER,
    on_hold_duration   INTEGER CHECK (on_hold_duration > 0),
    on_hold_timeout_at INTEGER,
    next_check         INTEGER                           -- when time alone can change the status
) STRICT, WITHOUT ROWID;
CREATE INDEX user_quota_next_check ON user_quota (next_check) WHERE next_check IS NOT NULL;

-- Existing users: unlimited, counted from everything recorded so far.
INSERT INTO user_quota (user_id, used)
SELECT u.id, coalesce((SELECT sum(h.up + h.down + h.undirected) FROM usage_hours h
                       WHERE h.user_id = u.id), 0)
FROM users u;
