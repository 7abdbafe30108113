//! Admin answers larger than a frame, sent in parts over their stream (SPEC §2.2: a message
//! bigger than one frame — `users list` at 100,000 users — is sent in chunks).
//!
//! A client that can join parts wraps its request in [`AdminRequest::InChunks`]. The controller
//! then sends a list answer (users, servers, services, usage rows, firewall rules, links, doctor
//! checks) in parts of at most [`CHUNK_ITEMS`] entries, fewer where their encoding would not fit
//! a frame: every part but the last as [`AdminResponse::More`], the last as the plain answer,
//! so the client reads frames until one is not `More`. Every other answer (an error, one
//! object) is one plain frame, as it always was.
//!
//! Negotiation is by request: a controller older than `InChunks` cannot decode it and answers
//! `malformed request`, and the client asks again with the request inside, which such a
//! controller answers in one frame. A client older than `InChunks` never sends it, so it never
//! sees `More`.
//!
//! [`Parts`] splits and encodes (the controller's half), [`join`] puts parts back together (the
//! client's half); both are pure.

use std::collections::VecDeque;

use super::admin::{AdminRequest, AdminResponse};
use super::frame::{self, FrameError};

/// List entries per part: 2,000 users are about 400 KB, so a part is far below the frame limit
/// and the client decodes one part while the next is on the way.
pub const CHUNK_ITEMS: usize = 2_000;

/// Why parts could not be joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A part is not the same kind of list as the parts before it.
    #[error("a part of a chunked answer does not match the parts before it")]
    Mismatch,
    /// A `More` frame inside a `More` frame.
    #[error("a part of a chunked answer is itself chunked")]
    Nested,
}

/// Whether `req` asks for an answer in parts; `InChunks` is never nested, so a nested one is
/// not answered in parts either (the controller refuses it).
pub fn wants_parts(req: &AdminRequest) -> bool {
    matches!(req, AdminRequest::InChunks(inner) if !matches!(**inner, AdminRequest::InChunks(_)))
}

/// The number of list entries in an answer; `None` for an answer that is not a list.
pub fn entries(resp: &AdminResponse) -> Option<usize> {
    use AdminResponse as R;
    Some(match resp {
        R::Servers(v) => v.len(),
        R::Services(v) => v.len(),
        R::Users(v) => v.len(),
        R::Links(v) => v.len(),
        R::Firewall(v) => v.len(),
        R::ServersDetail(v) => v.len(),
        R::Doctor(d) => d.checks.len(),
        R::Usage(u) => u.rows.len(),
        R::UsersDetail(v) => v.len(),
        _ => return None,
    })
}

/// `v` cut into consecutive parts of at most `n` entries (one part, maybe empty, when it fits).
/// Each entry is moved once (splitting the tail off again and again would copy it each time).
fn cut<T>(v: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let n = n.max(1);
    if v.len() <= n {
        return vec![v];
    }
    let mut out = Vec::with_capacity(v.len().div_ceil(n));
    let mut entries = v.into_iter();
    loop {
        let part: Vec<T> = entries.by_ref().take(n).collect();
        if part.is_empty() {
            return out;
        }
        out.push(part);
    }
}

/// Splits a list answer into parts of at most `n` entries, in order; any other answer, and a
/// list of at most `n` entries, is one part.
pub fn split(resp: AdminResponse, n: usize) -> Vec<AdminResponse> {
    use AdminResponse as R;
    fn each<T>(v: Vec<T>, n: usize, f: impl Fn(Vec<T>) -> AdminResponse) -> Vec<AdminResponse> {
        cut(v, n).into_iter().map(f).collect()
    }
    match resp {
        R::Servers(v) => each(v, n, R::Servers),
        R::Services(v) => each(v, n, R::Services),
        R::Users(v) => each(v, n, R::Users),
        R::Links(v) => each(v, n, R::Links),
        R::Firewall(v) => each(v, n, R::Firewall),
        R::ServersDetail(v) => each(v, n, R::ServersDetail),
        R::Doctor(d) => each(d.checks, n, |checks| {
            R::Doctor(super::admin::DoctorReport { checks })
        }),
        R::Usage(u) => {
            let (since, by) = (u.since, u.by);
            each(u.rows, n, |rows| {
                R::Usage(super::admin::UsageInfo { since, by, rows })
            })
        }
        R::UsersDetail(v) => each(v, n, R::UsersDetail),
        other => vec![other],
    }
}

/// Appends `part`'s entries to `into`, which holds the parts received before it.
pub fn join(into: &mut AdminResponse, part: AdminResponse) -> Result<(), ChunkError> {
    use AdminResponse as R;
    match (into, part) {
        (_, R::More(_)) => return Err(ChunkError::Nested),
        (R::Servers(a), R::Servers(b)) => a.extend(b),
        (R::Services(a), R::Services(b)) => a.extend(b),
        (R::Users(a), R::Users(b)) => a.extend(b),
        (R::Links(a), R::Links(b)) => a.extend(b),
        (R::Firewall(a), R::Firewall(b)) => a.extend(b),
        (R::ServersDetail(a), R::ServersDetail(b)) => a.extend(b),
        (R::Doctor(a), R::Doctor(b)) => a.checks.extend(b.checks),
        (R::Usage(a), R::Usage(b)) if (a.since, a.by) == (b.since, b.by) => a.rows.extend(b.rows),
        (R::UsersDetail(a), R::UsersDetail(b)) => a.extend(b),
        _ => return Err(ChunkError::Mismatch),
    }
    Ok(())
}

/// The frames of one answer, encoded one at a time as they are asked for: parts of at most
/// `items` entries, a part whose encoding is larger than `max_body` halved until it fits.
pub struct Parts {
    queue: VecDeque<AdminResponse>,
    max_body: usize,
}

impl Parts {
    /// The frames of `resp` for a client that asked [`AdminRequest::InChunks`].
    pub fn new(resp: AdminResponse) -> Parts {
        Parts::with_limits(resp, CHUNK_ITEMS, frame::MAX_FRAME)
    }

    /// [`Parts::new`] with other limits (`max_body` is capped at [`frame::MAX_FRAME`]).
    pub fn with_limits(resp: AdminResponse, items: usize, max_body: usize) -> Parts {
        Parts {
            queue: split(resp, items).into(),
            max_body: max_body.min(frame::MAX_FRAME),
        }
    }

    /// The next frame (length prefix included); `None` after the last. An error is a single
    /// list entry larger than a frame: nothing more can be sent.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        loop {
            let part = self.queue.pop_front()?;
            let last = self.queue.is_empty();
            let msg = if last {
                part
            } else {
                AdminResponse::More(Box::new(part))
            };
            let too_large = |len| FrameError::TooLarge {
                len,
                max: self.max_body,
            };
            let err = match frame::encode(&msg) {
                Ok(bytes) if bytes.len() - 4 <= self.max_body => return Some(Ok(bytes)),
                Ok(bytes) => too_large(bytes.len() - 4),
                Err(e) => e,
            };
            let part = match msg {
                AdminResponse::More(part) => *part,
                part => part,
            };
            let halves = match entries(&part) {
                Some(n) if n > 1 && matches!(err, FrameError::TooLarge { .. }) => {
                    split(part, n.div_ceil(2))
                }
                _ => return Some(Err(err)),
            };
            for half in halves.into_iter().rev() {
                self.queue.push_front(half);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::admin::{DoctorReport, FirewallRuleInfo, UsageBy, UsageInfo, UsageRow};

    fn rule(i: usize) -> FirewallRuleInfo {
        FirewallRuleInfo {
            target: format!("203.0.113.{i}/32"),
            server: None,
            created_at: i as i64,
        }
    }

    /// What a client does with the frames: read until one is not `More`, joining parts.
    fn receive(frames: Vec<Vec<u8>>) -> (usize, AdminResponse) {
        let mut joined: Option<AdminResponse> = None;
        let count = frames.len();
        for (i, bytes) in frames.into_iter().enumerate() {
            let msg: AdminResponse = frame::decode_body(&bytes[4..]).unwrap();
            let (more, part) = match msg {
                AdminResponse::More(p) => (true, *p),
                p => (false, p),
            };
            assert_eq!(more, i + 1 < count, "only the last frame is plain");
            match &mut joined {
                None => joined = Some(part),
                Some(acc) => join(acc, part).unwrap(),
            }
        }
        (count, joined.unwrap())
    }

    fn frames(mut parts: Parts) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| parts.next_frame())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_list_comes_back_whole_and_in_order_from_its_parts() {
        let rules: Vec<_> = (0..2_345).map(rule).collect();
        let resp = AdminResponse::Firewall(rules.clone());
        let (count, joined) = receive(frames(Parts::with_limits(resp, 1_000, usize::MAX)));
        assert_eq!(count, 3);
        assert_eq!(joined, AdminResponse::Firewall(rules));
    }

    #[test]
    fn small_lists_and_other_answers_are_one_plain_frame() {
        for resp in [
            AdminResponse::Firewall(vec![]),
            AdminResponse::Firewall((0..10).map(rule).collect()),
            AdminResponse::Doctor(DoctorReport { checks: vec![] }),
            AdminResponse::Error {
                kind: crate::proto::admin::ErrorKind::BadData,
                message: "no".into(),
            },
        ] {
            let (count, joined) = receive(frames(Parts::new(resp.clone())));
            assert_eq!((count, joined), (1, resp));
        }
    }

    #[test]
    fn a_part_larger_than_a_frame_is_halved_until_it_fits() {
        let rules: Vec<_> = (0..1_000).map(rule).collect();
        let resp = AdminResponse::Firewall(rules.clone());
        let one = frame::encode(&rule(999)).unwrap().len();
        // About 100 entries per frame allowed, 1,000 asked for.
        let frames = frames(Parts::with_limits(resp, 1_000, one * 100));
        assert!(frames.len() >= 10, "{} frames", frames.len());
        assert!(frames.iter().all(|f| f.len() - 4 <= one * 100));
        assert_eq!(receive(frames).1, AdminResponse::Firewall(rules));
    }

    #[test]
    fn an_entry_larger_than_a_frame_is_an_error_not_a_loop() {
        let mut parts = Parts::with_limits(AdminResponse::Firewall(vec![rule(1)]), 10, 8);
        assert!(matches!(
            parts.next_frame(),
            Some(Err(FrameError::TooLarge { .. }))
        ));
    }

    #[test]
    fn usage_parts_keep_their_query_and_mismatched_parts_are_refused() {
        let row = |i: u64| UsageRow {
            user: format!("u{i}"),
            key: None,
            up: i,
            down: 0,
            undirected: 0,
            total: i,
        };
        let usage = UsageInfo {
            since: Some(7),
            by: UsageBy::Server,
            rows: (0..5).map(row).collect(),
        };
        let (count, joined) = receive(frames(Parts::with_limits(
            AdminResponse::Usage(usage.clone()),
            2,
            usize::MAX,
        )));
        assert_eq!((count, joined), (3, AdminResponse::Usage(usage.clone())));

        let mut acc = AdminResponse::Usage(usage.clone());
        let other = UsageInfo {
            by: UsageBy::Day,
            ..usage
        };
        assert_eq!(
            join(&mut acc, AdminResponse::Usage(other)),
            Err(ChunkError::Mismatch)
        );
        assert_eq!(
            join(&mut acc, AdminResponse::Firewall(vec![])),
            Err(ChunkError::Mismatch)
        );
        assert_eq!(
            join(
                &mut acc,
                AdminResponse::More(Box::new(AdminResponse::Firewall(vec![])))
            ),
            Err(ChunkError::Nested)
        );
    }

    #[test]
    fn only_a_single_wrapper_asks_for_parts() {
        let list = AdminRequest::UsersListDetail;
        assert!(!wants_parts(&list));
        let once = AdminRequest::InChunks(Box::new(list));
        assert!(wants_parts(&once));
        assert!(!wants_parts(&AdminRequest::InChunks(Box::new(once))));
    }
}
