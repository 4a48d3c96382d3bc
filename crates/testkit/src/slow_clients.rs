//! Slow and abusive HTTP clients against a server on 127.0.0.1: connections that send nothing,
//! a request head that never ends (slowloris), or a body that never arrives; and a check that
//! the server closed them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How a slow connection misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slowness {
    /// Connects and sends nothing.
    Silent,
    /// Sends a request line and part of the headers, then stops.
    PartialHead,
    /// Sends a complete head announcing a body, a few bytes of it, then stops.
    PartialBody,
}

/// Connections this test process may open to a server in the same process (each costs two file
/// descriptors), at most `wanted`: the soft `RLIMIT_NOFILE` less a margin for the broker clients
/// and the runtime, halved. Says so on stderr when that is fewer than wanted.
pub fn connection_budget(wanted: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|soft| soft.parse::<usize>().ok());
    match soft {
        Some(soft) => {
            let budget = soft.saturating_sub(512) / 2;
            if budget < wanted {
                eprintln!(
                    "open-files soft limit is {soft}: opening {budget} slow connections instead of \
                     {wanted} (raise it with `ulimit -n` to test the full count)"
                );
            }
            budget.min(wanted)
        }
        None => wanted,
    }
}

/// Opens `count` connections to `addr` that misbehave as `slowness` says; `head` is the request
/// head (without the final blank line) a [`Slowness::PartialBody`] connection sends.
pub async fn open(
    addr: SocketAddr,
    count: usize,
    slowness: Slowness,
    head: &str,
) -> Vec<TcpStream> {
    assert!(
        addr.ip().is_loopback(),
        "slow clients only talk to 127.0.0.1"
    );
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        match slowness {
            Slowness::Silent => {}
            Slowness::PartialHead => {
                stream
                    .write_all(b"POST /v1/events HTTP/1.1\r\nhost: receipts\r\nx-slow: ")
                    .await
                    .expect("write a partial head");
            }
            Slowness::PartialBody => {
                let request = format!("{head}\r\ncontent-length: 1000\r\n\r\nid:1");
                stream
                    .write_all(request.as_bytes())
                    .await
                    .expect("write a partial body");
            }
        }
        streams.push(stream);
    }
    streams
}

/// How the server ended a slow connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closed {
    /// Connections closed without an answer.
    pub silently: usize,
    /// Status codes of the answers sent before closing, in no particular order.
    pub answered: Vec<u16>,
}

/// Waits until the server closed every stream (EOF or reset), at most `within`; panics naming
/// how many are still open then.
pub async fn wait_closed(streams: Vec<TcpStream>, within: Duration) -> Closed {
    let deadline = Instant::now() + within;
    let mut tasks = JoinSet::new();
    for mut stream in streams {
        tasks.spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            let until = tokio::time::Instant::from_std(deadline);
            loop {
                match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                    Err(_) => return Err(()),
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let status = std::str::from_utf8(&seen)
                .ok()
                .and_then(|text| text.strip_prefix("HTTP/1.1 "))
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse::<u16>().ok());
            Ok(status)
        });
    }
    let mut closed = Closed::default();
    let mut open = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("reader task") {
            Ok(Some(status)) => closed.answered.push(status),
            Ok(None) => closed.silently += 1,
            Err(()) => open += 1,
        }
    }
    assert_eq!(
        open, 0,
        "{open} slow connections were still open after {within:?}"
    );
    closed
}
