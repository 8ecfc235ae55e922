//! `openmono probe URL`: one HTTP GET from inside the box, for the host to learn whether
//! a model server on the private network is ready. The exit code is the answer:
//! 0 the server answered 200, 1 it answered 503 (still loading), 2 anything else
//! (not listening yet, another status, a bad URL).

use std::time::Duration;

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
