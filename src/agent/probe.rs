//! `openmono probe URL`: one HTTP GET from inside the box, for the host to learn whether
//! a model server on the private network is ready. The exit code is the answer:
//! 0 the server answered 200, 1 it answered 503 (still loading), 2 anything else
//! (not listening yet, another status, a bad URL).
//!
//! `openmono probe --wait SECONDS URL` asks again and again, from the same place, until
//! the answer is 200 (exit 0) or the time is up (exit 2), printing a line each time the
//! server's state changes. One `exec` from the host does the whole wait, so the host
//! learns that the server is ready within one [`INTERVAL`] of it, not one engine round
//! trip plus a sleep.

use std::io::Write as _;
use std::time::{Duration, Instant};

/// Asks `url` once, giving up after `timeout`; returns the exit code described above.
#[must_use]
pub fn probe(url: &str, timeout: Duration) -> i32 {
    match super::chat::http_agent(timeout).get(url).call() {
        Ok(response) => match response.status().as_u16() {
            200 => 0,
            503 => 1,
            status => {
                eprintln!("{url} answered {status}");
                2
            }
        },
        Err(error) => {
            eprintln!("{url}: {error}");
            2
        }
    }
}

/// How often `--wait` asks: a refused connection or a `/health` answer costs the server
/// next to nothing.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// Asks `url` every [`INTERVAL`] until it answers 200 or `patience` has passed; returns
/// 0 or 2. Each change of state is a line on stdout, for the host's progress.
#[must_use]
pub fn wait(url: &str, patience: Duration) -> i32 {
    let agent = super::chat::http_agent(Duration::from_secs(2));
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let state = match agent.get(url).call() {
            Ok(response) => match response.status().as_u16() {
                200 => return 0,
                503 => "loading the model (503)".to_owned(),
                status => format!("the server answered {status}"),
            },
            Err(_) => "waiting for the server to listen".to_owned(),
        };
        if state != said {
            // A closed pipe only means the host stopped listening; the wait goes on.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{state}").and_then(|()| out.flush());
            said = state;
        }
        if started.elapsed() >= patience {
            eprintln!("{url}: not ready after {} s: {said}", patience.as_secs());
            return 2;
        }
        std::thread::sleep(INTERVAL);
    }
}
