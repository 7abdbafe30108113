//! Quotas and time (SPEC §2.6), as a pure core: which status a user is in at a given moment,
//! why, and when that can next change — from the user's limits, the bytes used in the current
//! reset period and the clock, all passed in. No IO and no clock of its own, so a reset a day
//! away is tested by passing tomorrow, not by sleeping.
//!
//! Reset periods are calendar periods in the controller's time zone, given as a fixed UTC
//! offset (default UTC): a day starts at midnight, a week on Monday, a month on its first day,
//! a year on January 1st.

use time::{Date, Duration, Month, OffsetDateTime, Time, UtcOffset};

/// How often a data limit starts again (the wire's type: the CLI sends it as is).
pub use vpn_shared::proto::admin::Reset;

/// A user's limits, as the operator set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Bytes per reset period; `None` is unlimited.
    pub data_limit: Option<u64>,
    pub reset: Option<Reset>,
    /// Unix seconds; `None` never expires (or, on hold, not set yet).
    pub expires_at: Option<i64>,
    /// On hold: the expiry clock starts at first use, running this many seconds.
    pub on_hold: Option<OnHold>,
}

/// `--on-hold 30d [--on-hold-timeout 7d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHold {
    /// How long the user may use the service once started, in seconds.
    pub duration: i64,
    /// Unix seconds after which the clock starts even without use.
    pub timeout_at: Option<i64>,
}

/// The statuses of SPEC §2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Active,
    Suspended,
    Limited,
    Expired,
    OnHold,
}

/// What the controller knows about a user at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub limits: Limits,
    /// An operator switched the user off; only an operator switches them on again.
    pub suspended: bool,
    /// Bytes used since the start of the current reset period (all time for `Never`).
    pub used: u64,
    /// Unix seconds of the first traffic seen on any host, if any.
    pub first_use: Option<i64>,
}

/// Why a user is in its status, for the operator's view to say (`limited: 50.0 GiB of 50 GiB
/// used`); the wording belongs to the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Active: nothing to say.
    None,
    Suspended,
    /// Past `at`.
    Expired {
        at: i64,
    },
    /// Waiting for first use; its clock runs `duration` seconds, or starts at `timeout_at`.
    OnHold {
        duration: i64,
        timeout_at: Option<i64>,
    },
    /// `used` of `limit` bytes in the current period.
    Limited {
        used: u64,
        limit: u64,
    },
}

/// The status a user is in, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    pub reason: Reason,
    /// The expiry an on-hold user gets when its clock starts (to be stored), else `None`.
    pub starts_expiry: Option<i64>,
    /// The next moment the status can change by time alone (a limited user's reset, an
    /// expiry, an on-hold timeout), for the controller's timer. A reset of a user under its
    /// limit is not one: the status stays, only the count starts again.
    pub next_change: Option<i64>,
}

/// Decides `facts`' status at `now` (Unix seconds) with reset periods in `offset`.
///
/// Precedence: suspended (an operator's choice) over expired (no reset helps) over on hold over
/// limited over active.
pub fn evaluate(facts: &Facts, now: i64, offset: UtcOffset) -> Verdict {
    let limits = &facts.limits;
    let mut starts_expiry = None;
    let mut expires_at = limits.expires_at;
    let mut next = Vec::new();
    if let (Some(hold), None) = (limits.on_hold, limits.expires_at) {
        let started = match (facts.first_use, hold.timeout_at) {
            (Some(first), _) => Some(first),
            (None, Some(timeout)) if now >= timeout => Some(timeout),
            (None, timeout) => {
                next.extend(timeout);
                None
            }
        };
        match started {
            Some(start) => {
                let at = start.saturating_add(hold.duration);
                starts_expiry = Some(at);
                expires_at = Some(at);
            }
            None if !facts.suspended => {
                return Verdict {
                    status: Status::OnHold,
                    reason: Reason::OnHold {
                        duration: hold.duration,
                        timeout_at: hold.timeout_at,
                    },
                    starts_expiry: None,
                    next_change: next.into_iter().min(),
                };
            }
            None => {}
        }
    }
    if facts.suspended {
        return Verdict {
            status: Status::Suspended,
            reason: Reason::Suspended,
            starts_expiry,
            next_change: None,
        };
    }
    if let Some(at) = expires_at {
        if now >= at {
            return Verdict {
                status: Status::Expired,
                reason: Reason::Expired { at },
                starts_expiry,
                next_change: None,
            };
        }
        next.push(at);
    }
    if let Some(limit) = limits.data_limit
        && facts.used >= limit
    {
        // Only a reset (or an edit) lifts a limit; an expiry still ends the user.
        let reset = limits.reset.unwrap_or(Reset::Never);
        next.extend(next_reset(reset, now, offset));
        return Verdict {
            status: Status::Limited,
            reason: Reason::Limited {
                used: facts.used,
                limit,
            },
            starts_expiry,
            next_change: next.into_iter().min(),
        };
    }
    // A reset changes nothing for a user under its limit: only the expiry can.
    Verdict {
        status: Status::Active,
        reason: Reason::None,
        starts_expiry,
        next_change: next.into_iter().min(),
    }
}

/// The bytes a user may still use in the current period, for the agents' offline enforcement;
/// `None` without a limit.
pub fn remaining(facts: &Facts) -> Option<u64> {
    facts
        .limits
        .data_limit
        .map(|limit| limit.saturating_sub(facts.used))
}

/// Start of the reset period that holds `t` (Unix seconds), in `offset`; `None` for `Never`.
pub fn period_start(reset: Reset, t: i64, offset: UtcOffset) -> Option<i64> {
    let local = local(t, offset)?;
    let date = local.date();
    let start = match reset {
        Reset::Never => return None,
        Reset::Day => date,
        Reset::Week => date.checked_sub(Duration::days(i64::from(
            date.weekday().number_days_from_monday(),
        )))?,
        Reset::Month => date.replace_day(1).ok()?,
        Reset::Year => Date::from_calendar_date(date.year(), Month::January, 1).ok()?,
    };
    Some(
        start
            .with_time(Time::MIDNIGHT)
            .assume_offset(offset)
            .unix_timestamp(),
    )
}

/// Start of the period after the one that holds `t`; `None` for `Never`.
pub fn next_reset(reset: Reset, t: i64, offset: UtcOffset) -> Option<i64> {
    let start = period_start(reset, t, offset)?;
    let date = local(start, offset)?.date();
    let next = match reset {
        Reset::Never => return None,
        Reset::Day => date.checked_add(Duration::days(1))?,
        Reset::Week => date.checked_add(Duration::weeks(1))?,
        Reset::Month => {
            let (y, m) = match date.month() {
                Month::December => (date.year() + 1, Month::January),
                m => (date.year(), m.next()),
            };
            Date::from_calendar_date(y, m, 1).ok()?
        }
        Reset::Year => Date::from_calendar_date(date.year() + 1, Month::January, 1).ok()?,
    };
    Some(
        next.with_time(Time::MIDNIGHT)
            .assume_offset(offset)
            .unix_timestamp(),
    )
}

fn local(t: i64, offset: UtcOffset) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .map(|d| d.to_offset(offset))
}

#[cfg(test)]
mod tests;
