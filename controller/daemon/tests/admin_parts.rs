//! Admin answers larger than a frame, on the wire: a client that asks `InChunks` gets the list
//! in `More` parts and a plain last part; a client that does not (an older `vpn`) gets an error
//! saying why, not a stream closed without an answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{STEP, TestController, bounded};
use vpn_shared::proto::admin::{AdminRequest, AdminResponse, ErrorKind};
use vpn_shared::proto::frame::{MAX_FRAME, read_frame, write_frame};

/// Users whose list is larger than a frame: 20,000 notes of 1,000 characters.
const USERS: usize = 20_000;

/// Writes `USERS` users (`user00000`…) with their quota rows beside the running controller
/// (SQLite in WAL mode takes a second connection).
async fn seed(tc: &TestController) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&tc.ctl.config.database_path)
        .connect()
        .await
        .unwrap();
    let users = format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
         INSERT INTO users (id, name, note, status, all_servers, created_at, updated_at) \
         SELECT printf('%08x-0000-4000-8000-%012x', i, i), printf('user%05d', i), \
         printf('%.1000c', 'n'), 'active', 1, 0, 0 FROM n",
        USERS - 1
    );
    for sql in [
        users.as_str(),
        "INSERT INTO user_quota (user_id) SELECT id FROM users",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

/// Sends `req` on a new stream and reads every frame of the answer.
async fn frames(admin: &quinn::Connection, req: &AdminRequest) -> Vec<AdminResponse> {
    let (mut send, mut recv) = admin.open_bi().await.unwrap();
    write_frame(&mut send, req).await.unwrap();
    send.finish().unwrap();
    let mut out = Vec::new();
    while let Some(frame) = tokio::time::timeout(STEP, read_frame(&mut recv, MAX_FRAME))
        .await
        .expect("a frame in time")
        .unwrap()
    {
        out.push(frame);
    }
    out
}

#[tokio::test]
async fn a_list_larger_than_a_frame_comes_in_parts_to_those_who_ask_and_as_an_error_to_others() {
    bounded(async {
        let tc = TestController::start().await;
        seed(&tc).await;
        let admin = tc.admin().await;

        let wrapped = AdminRequest::InChunks(Box::new(AdminRequest::UsersListDetail));
        let got = frames(&admin, &wrapped).await;
        assert!(got.len() >= 10, "2,000 users a part: {} frames", got.len());
        let count = got.len();
        let mut names = Vec::new();
        for (i, frame) in got.into_iter().enumerate() {
            let (more, part) = match frame {
                AdminResponse::More(part) => (true, *part),
                last => (false, last),
            };
            assert_eq!(more, i + 1 < count, "only the last frame is plain ({i})");
            let AdminResponse::UsersDetail(users) = part else {
                panic!("part {i} is not a users list: {part:?}");
            };
            names.extend(users.into_iter().map(|d| d.user.name));
        }
        let expected: Vec<String> = (0..USERS).map(|i| format!("user{i:05}")).collect();
        assert_eq!(names, expected, "every user once, in order");

        // An older client asks without the wrapper: the answer cannot fit, and it is told so.
        let got = frames(&admin, &AdminRequest::UsersListDetail).await;
        match got.as_slice() {
            [AdminResponse::Error { kind, message }] => {
                assert_eq!(*kind, ErrorKind::Internal);
                assert!(
                    message.contains("larger than a frame") && message.contains("in parts"),
                    "{message}"
                );
            }
            other => panic!("expected one error frame, got {} frames", other.len()),
        }

        // A small list asked in parts is one plain frame; a nested wrapper is refused.
        let got = frames(
            &admin,
            &AdminRequest::InChunks(Box::new(AdminRequest::FirewallList)),
        )
        .await;
        assert_eq!(got, vec![AdminResponse::Firewall(vec![])]);
        let nested = AdminRequest::InChunks(Box::new(wrapped));
        let got = frames(&admin, &nested).await;
        assert!(
            matches!(
                got.as_slice(),
                [AdminResponse::Error {
                    kind: ErrorKind::BadData,
                    ..
                }]
            ),
            "{got:?}"
        );
        assert_eq!(common::worker_panics(), 0);
    })
    .await;
}
