//! postgres probe: connect with tokio-postgres and run `SELECT 1`. The connection string
//! may hold a password, so it never appears in a message: only the server's error does.

use tokio_postgres::NoTls;

pub async fn check(conn: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls)
        .await
        .map_err(|e| format!("postgres: {}", describe(&e)))?;
    let driver = tokio::spawn(connection);
    let result = client
        .simple_query("SELECT 1")
        .await
        .map(drop)
        .map_err(|e| format!("postgres: SELECT 1: {}", describe(&e)));
    drop(client);
    driver.abort();
    result
}

fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(src)) => format!("{e}: {src}"),
        (None, None) => e.to_string(),
    }
}
