//! Wire-protocol behaviour through a real client (tokio-postgres): extended protocol with
//! named statements and portals, row limits, binary results, cancel, concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use tokio_postgres::{NoTls, SimpleQueryMessage};

async fn connect(port: u16) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&common::conninfo(port), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn extended_protocol_portals_and_row_limits() {
    common::ensure_demo_data();
    let server = common::start(&[]);
    let mut client = connect(server.port).await;

    // A named statement, executed several times with different parameters.
    let statement = client
        .prepare("SELECT region, revenue FROM sales WHERE region <> $1 ORDER BY region")
        .await
        .expect("prepare");
    let all: Vec<String> = client
        .query(&statement, &[&"nowhere"])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    assert_eq!(all, vec!["Central", "East", "North", "South", "West"]);
    let without_east = client
        .query(&statement, &[&"East"])
        .await
        .expect("query again");
    assert_eq!(without_east.len(), 4);

    // A portal read three rows at a time (Execute with max_rows, PortalSuspended).
    let transaction = client.transaction().await.expect("begin");
    let portal = transaction
        .bind(
            "SELECT order_date, units FROM sales WHERE order_date__month = $1 ORDER BY 1",
            &[&chrono::NaiveDate::from_ymd_opt(2024, 2, 1).expect("date")],
        )
        .await
        .expect("bind");
    let mut days = Vec::new();
    loop {
        let rows = transaction.query_portal(&portal, 3).await.expect("fetch");
        assert!(rows.len() <= 3);
        if rows.is_empty() {
            break;
        }
        days.extend(rows.iter().map(|r| r.get::<_, chrono::NaiveDate>(0)));
    }
    transaction.commit().await.expect("commit");
    assert_eq!(days.len(), 29, "February 2024 has 29 days");
    assert!(days.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_results_have_the_declared_types() {
    common::ensure_demo_data();
    let server = common::start(&[]);
    let client = connect(server.port).await;
    // tokio-postgres asks for binary results and checks each column's type OID.
    let row = client
        .query_one(
            "SELECT order_date, order_date__quarter, orders, units, revenue::float8 AS r, region FROM sales \
             WHERE order_date = $1 AND region = 'East'",
            &[&chrono::NaiveDate::from_ymd_opt(2023, 5, 17).expect("date")],
        )
        .await
        .expect("query");
    assert_eq!(
        row.get::<_, chrono::NaiveDate>(0),
        chrono::NaiveDate::from_ymd_opt(2023, 5, 17).expect("date")
    );
    assert_eq!(
        row.get::<_, chrono::NaiveDate>(1),
        chrono::NaiveDate::from_ymd_opt(2023, 4, 1).expect("date")
    );
    assert!(row.get::<_, i64>(2) > 0);
    assert!(row.get::<_, i64>(3) >= row.get::<_, i64>(2));
    assert!(row.get::<_, f64>(4) > 0.0);
    assert_eq!(row.get::<_, String>(5), "East");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_do_not_break_the_session_and_statuses_follow_postgres() {
    common::ensure_demo_data();
    let server = common::start(&[]);
    let client = connect(server.port).await;
    let err = client
        .query("SELECT nope FROM sales", &[])
        .await
        .expect_err("unknown column");
    assert_eq!(err.code().map(|c| c.code()), Some("42703"));
    let err = client
        .simple_query("SELECT 1; SELECT nope FROM sales; SELECT 2")
        .await
        .expect_err("second fails");
    assert_eq!(err.code().map(|c| c.code()), Some("42703"));
    let rows = client
        .simple_query("SELECT 'still here'")
        .await
        .expect("usable");
    assert!(
        rows.iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("still here")))
    );
}

/// A query that cannot finish in any reasonable time: non-equi joins over about 10^13
/// combinations of rows (a plain cross join would be counted from statistics, and two
/// sides alone finish in seconds).
const ENDLESS: &str = "SELECT COUNT(*) FROM (SELECT order_date, store_name FROM sales) a \
                       JOIN (SELECT order_date, store_name FROM sales) b \
                         ON a.store_name < b.store_name AND a.order_date <= b.order_date \
                       JOIN (SELECT order_date, store_name FROM sales) c \
                         ON b.order_date < c.order_date AND c.store_name <> a.store_name";

/// Failsafe so a broken cancel fails the test instead of hanging it (not a speed check).
const FAILSAFE: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_request_stops_a_running_query_and_the_session_survives() {
    common::ensure_demo_data();
    let server = common::start(&[]);
    let client = connect(server.port).await;
    let token = client.cancel_token();
    // A cancel request only stops a statement that is executing (as in PostgreSQL); on a
    // loaded machine the first one may arrive while the statement is still being planned,
    // so, like a user pressing Ctrl-C again, send one every half second until it ends.
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let canceller = tokio::spawn(async move {
        let mut sent = 0u32;
        loop {
            tokio::select! {
                _ = &mut done_rx => return Ok::<u32, tokio_postgres::Error>(sent),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    token.cancel_query(NoTls).await?;
                    sent += 1;
                }
            }
        }
    });
    let result = tokio::time::timeout(FAILSAFE, client.query(ENDLESS, &[]))
        .await
        .expect("the cancel requests did not stop the query");
    let _ = done_tx.send(());
    let sent = canceller
        .await
        .expect("join")
        .expect("a cancel request could not be sent");
    assert!(
        sent >= 1,
        "the query ended before any cancel request: {result:?}"
    );
    let err = result.expect_err("an endless query cannot succeed");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err:?}");
    let row = client
        .query_one("SELECT 1::int4", &[])
        .await
        .expect("usable after cancel");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_query_does_not_block_other_connections() {
    common::ensure_demo_data();
    let server = common::start(&[]);
    let slow_client = connect(server.port).await;
    let token = slow_client.cancel_token();
    let slow = tokio::spawn(async move { slow_client.query(ENDLESS, &[]).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast_client = connect(server.port).await;
    for _ in 0..10 {
        let row = tokio::time::timeout(
            FAILSAFE,
            fast_client.query_one("SELECT region FROM sales WHERE region = 'West'", &[]),
        )
        .await
        .expect("a quick query waited behind the endless one")
        .expect("fast query");
        assert_eq!(row.get::<_, String>(0), "West");
    }
    assert!(!slow.is_finished(), "the endless query is still running");
    token.cancel_query(NoTls).await.expect("cancel");
    let outcome = tokio::time::timeout(FAILSAFE, slow)
        .await
        .expect("cancel stopped it")
        .expect("join");
    assert!(outcome.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn many_clients_at_once() {
    common::ensure_demo_data();
    let server = common::start(&[]);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let port = server.port;
        tasks.push(tokio::spawn(async move {
            let client = connect(port).await;
            let region = ["East", "West", "North", "South"][i % 4];
            let row = client
                .query_one("SELECT orders FROM sales WHERE region = $1", &[&region])
                .await
                .expect("query");
            (region, row.get::<_, i64>(0))
        }));
    }
    let mut by_region = std::collections::HashMap::new();
    for t in tasks {
        let (region, orders) = t.await.expect("join");
        let previous = by_region.insert(region, orders);
        assert!(
            previous.is_none_or(|p| p == orders),
            "same question, same answer"
        );
    }
    assert_eq!(by_region.len(), 4);
}

/// A client speaking the startup protocol by hand: what the server asks for, and what it
/// answers to a password sent in clear.
struct RawClient(std::net::TcpStream);

impl RawClient {
    fn connect(port: u16, user: &str) -> RawClient {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(FAILSAFE))
            .expect("read timeout");
        let mut client = RawClient(stream);
        let mut body = 196_608i32.to_be_bytes().to_vec(); // protocol 3.0
        for part in ["user", user, "database", "kpitables"] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        message.extend(body);
        client.write(&message);
        client
    }

    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.0.write_all(bytes).expect("write");
    }

    /// The next message: its type and body; None when the server closed the connection.
    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut head = [0u8; 5];
        self.0.read_exact(&mut head).ok()?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.0.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    /// A PasswordMessage with the password in clear.
    fn send_cleartext(&mut self, password: &str) {
        let mut message = vec![b'p'];
        message.extend(((password.len() + 5) as i32).to_be_bytes());
        message.extend(password.as_bytes());
        message.push(0);
        self.write(&message);
    }
}

/// The authentication request of an `R` message: its code and the rest.
fn auth_request(message: &(u8, Vec<u8>)) -> (i32, Vec<u8>) {
    assert_eq!(
        message.0, b'R',
        "expected an authentication request, got {message:?}"
    );
    let code = i32::from_be_bytes([message.1[0], message.1[1], message.1[2], message.1[3]]);
    (code, message.1[4..].to_vec())
}

/// The SQLSTATE of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|code| String::from_utf8_lossy(code).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn cleartext_passwords_are_refused_unless_allowed() {
    common::ensure_demo_data();

    // By default the server asks for SCRAM-SHA-256 and nothing else, and a client that
    // answers with its password in clear is refused, never logged in.
    let server = common::start(&[]);
    let mut raw = RawClient::connect(server.port, "exec");
    let request = raw.read().expect("an authentication request");
    let (code, mechanisms) = auth_request(&request);
    assert_eq!(code, 10, "AuthenticationSASL expected, got code {code}");
    let mechanisms: Vec<String> = mechanisms
        .split(|b| *b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(mechanisms, vec!["SCRAM-SHA-256".to_string()]);
    raw.send_cleartext("exec");
    match raw.read() {
        // As PostgreSQL answers a password where a SASL response belongs.
        Some((b'E', body)) => assert_eq!(sqlstate(&body), "08P01"),
        other => panic!("a cleartext password was not refused: {other:?}"),
    }
    // Then the connection closes (pgwire sends a ReadyForQuery before it closes).
    let mut after = Vec::new();
    while let Some((kind, _)) = raw.read() {
        after.push(kind);
    }
    assert!(
        after.iter().all(|k| *k == b'Z'),
        "after the refusal: {after:?}"
    );
    // A real client logs in the same way, with SCRAM (the only method offered).
    let client = connect(server.port).await;
    let row = client
        .query_one("SELECT 1::int4", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, i32>(0), 1);

    // Allowed in the configuration: the server asks for the password in clear.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("plain.toml");
    let model = common::root().join("semantic/demo");
    std::fs::write(
        &config,
        format!(
            "model = \"{}\"\nallow_cleartext_passwords = true\n[[users]]\nname = \"plain\"\npassword_env = \"KP_TEST_PLAIN_PASSWORD\"\n",
            model.display()
        ),
    )
    .expect("write config");
    let (mut child, port) = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kpitables"))
            .current_dir(common::root())
            .env("KP_TEST_PLAIN_PASSWORD", "secret")
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start");
        let mut ok = false;
        for _ in 0..1200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(ok, "server did not start");
        (child, port)
    };
    let mut raw = RawClient::connect(port, "plain");
    let (code, _) = auth_request(&raw.read().expect("an authentication request"));
    assert_eq!(code, 3, "AuthenticationCleartextPassword expected");
    raw.send_cleartext("secret");
    let (code, _) = auth_request(&raw.read().expect("the answer to the password"));
    assert_eq!(code, 0, "AuthenticationOk expected");
    let bad = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=plain password=wrong dbname=kpitables"),
        NoTls,
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let err = bad.err().expect("wrong password refused");
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"));
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_out_through_the_extended_protocol() {
    use futures::StreamExt;
    common::ensure_demo_data();
    let server = common::start(&[]);
    let client = connect(server.port).await;
    // tokio-postgres sends COPY with Parse/Bind/Execute; the rows are those of the SELECT.
    let stream = client
        .copy_out("COPY (SELECT region, revenue FROM sales ORDER BY region) TO STDOUT (FORMAT csv, HEADER)")
        .await
        .expect("copy out");
    let chunks: Vec<bytes::Bytes> = stream
        .map(|chunk| chunk.expect("copy data"))
        .collect()
        .await;
    let text = String::from_utf8(chunks.concat()).expect("utf-8");
    let mut expected = String::from("region,revenue\n");
    for message in client
        .simple_query("SELECT region, revenue FROM sales ORDER BY region")
        .await
        .expect("select")
    {
        if let SimpleQueryMessage::Row(row) = message {
            let region = row.get(0).expect("region");
            let revenue = row.get(1).expect("revenue");
            expected.push_str(&format!("{region},{revenue}\n"));
        }
    }
    assert_eq!(text, expected);
    assert_eq!(text.lines().count(), 6);
    // The session goes on after a refused COPY form.
    let refused = client
        .copy_out("COPY sales TO '/tmp/kpitables-copy-test.csv'")
        .await
        .err()
        .and_then(|e| e.code().cloned());
    assert_eq!(
        refused,
        Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    let one: i64 = client
        .query_one("SELECT count(DISTINCT region) FROM sales", &[])
        .await
        .expect("query after")
        .get(0);
    assert_eq!(one, 5);
}
