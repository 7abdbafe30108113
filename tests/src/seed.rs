//! Seeding a stopped controller's SQLite store directly, for stories at a scale the CLI would
//! take minutes to build (thousands of users): the statements run in order on one connection.

use std::path::Path;

/// Runs `statements` on the database file `db`, in order; panics naming the failing one.
pub fn run_sql(db: &Path, statements: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("a runtime for seeding: {e}"));
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", db.display()));
        for sql in statements {
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("seeding {}: {e}\n{sql}", db.display()));
        }
    });
}
