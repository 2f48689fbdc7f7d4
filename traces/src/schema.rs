//! The tables. One row per group and per completion; JSON columns for what varies by task.

use std::path::Path;

use rusqlite::Connection;

use crate::TraceError;

/// `PRAGMA user_version` of the stores this version writes and reads; bumped with any change to
/// the tables below.
pub const SCHEMA_VERSION: i64 = 1;

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS groups (
    id          INTEGER PRIMARY KEY,
    step        INTEGER NOT NULL,
    group_index INTEGER NOT NULL,
    prompt_id   TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    sample      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS completions (
    id            INTEGER PRIMARY KEY,
    group_id      INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    step          INTEGER NOT NULL,
    sample_index  INTEGER NOT NULL,
    text          TEXT NOT NULL,
    tokens        INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    reward        REAL,
    rewards       TEXT NOT NULL,
    advantage     REAL,
    detail        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS groups_by_step ON groups(step);
CREATE INDEX IF NOT EXISTS groups_by_prompt ON groups(prompt_id, step);
CREATE INDEX IF NOT EXISTS completions_by_step ON completions(step, reward);
CREATE INDEX IF NOT EXISTS completions_by_group ON completions(group_id);
";

pub(crate) fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> TraceError + '_ {
    move |source| TraceError::Sqlite { path: path.to_path_buf(), source }
}

/// Opens (creating if needed) the store for writing: WAL, so readers never block the writer.
pub(crate) fn open_for_writing(path: &Path) -> Result<Connection, TraceError> {
    let error = sqlite_error(path);
    let connection = Connection::open(path).map_err(&error)?;
    connection.pragma_update(None, "journal_mode", "WAL").map_err(&error)?;
    // A crash may lose the last step's traces, never corrupt the file; the checkpoint is the truth.
    connection.pragma_update(None, "synchronous", "NORMAL").map_err(&error)?;
    connection.pragma_update(None, "foreign_keys", "ON").map_err(&error)?;
    let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&error)?;
    if version != 0 && version != SCHEMA_VERSION {
        return Err(TraceError::Store {
            path: path.to_path_buf(),
            message: format!("schema version {version}; this aha reads version {SCHEMA_VERSION}"),
        });
    }
    connection.execute_batch(CREATE).map_err(&error)?;
    connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(&error)?;
    Ok(connection)
}
