//! TCP_NODELAY for the connections testdb loads fixtures through.
//!
//! sqlx 0.9.0 leaves Nagle's algorithm on (transact-rs/sqlx#4335, fixed upstream after 0.9.0).
//! `COPY … FROM STDIN` sends its rows and its end in two writes with no answer between them, so
//! the end waits for the server's delayed acknowledgement of the rows: 40 ms per table loaded
//! over TCP. Until a release of sqlx sets the option itself, testdb sets it on the connection's
//! socket, which it finds by the ports the server sees the connection on.

use sqlx::postgres::PgConnection;

/// Sets TCP_NODELAY on `conn`'s socket, if it is a TCP connection and its socket can be found.
pub(crate) async fn set(conn: &mut PgConnection) -> sqlx::Result<()> {
    let (client, server): (Option<i32>, Option<i32>) =
        sqlx::query_as("SELECT inet_client_port(), inet_server_port()")
            .fetch_one(conn)
            .await?;
    if let (Some(client), Some(server)) = (client, server)
        && let (Ok(client), Ok(server)) = (u16::try_from(client), u16::try_from(server))
    {
        set_on(client, server);
    }
    Ok(())
}

/// Sets TCP_NODELAY on the process's TCP socket from local port `client` to port `server`.
#[cfg(target_os = "linux")]
fn set_on(client: u16, server: u16) {
    use std::os::fd::{BorrowedFd, RawFd};

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        let socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !socket {
            continue;
        }
        // SAFETY: the descriptor was listed as open a moment ago, and is only duplicated here;
        // were it closed (or reused) meanwhile, the duplicate fails, or names a socket that the
        // port checks below pass over.
        #[allow(unsafe_code)]
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        let Ok(owned) = borrowed.try_clone_to_owned() else {
            continue;
        };
        let stream = std::net::TcpStream::from(owned);
        let ours = stream.local_addr().is_ok_and(|at| at.port() == client)
            && stream.peer_addr().is_ok_and(|at| at.port() == server);
        if ours {
            let _ = stream.set_nodelay(true);
            return;
        }
    }
}

/// Elsewhere the socket is not looked for: COPY over TCP keeps sqlx's delay.
#[cfg(not(target_os = "linux"))]
fn set_on(_client: u16, _server: u16) {}
