//! `openmono replay SCRIPT`: a model server that replays a script. It speaks the
//! OpenAI-compatible API of llama.cpp's `llama-server` (`/health`, `/v1/models`,
//! `/v1/chat/completions`, streamed or whole) and answers the n-th chat request with the
//! script's n-th reply ([`script`]), delivered as the script says: whole, in chunks,
//! cut off, never ending, or with the server dying ([`server`]).
//!
//! A playbook's `model "m" { replay "session.jsonl" }` runs it in a container on the
//! model's network, from the openmono binary the run copies in. Each chat request it
//! gets is printed on stdout as one JSON line, `{"request": N, "body": …}`, so that a
//! run's `MODEL.server.log` shows what the agent sent.

pub mod script;
pub mod server;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;

use self::script::Script;

/// Arguments of `openmono replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The script: JSON Lines, one reply per line, or an openmono transcript
    pub script: PathBuf,
    /// The address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The model's name in the API, as `/v1/models` lists it
    #[arg(long, default_value = "replay")]
    pub alias: String,
}

/// Serves the script until the process is stopped; returns the exit code when it
/// cannot start: 2 for a bad script, 1 when the address cannot be used.
#[must_use]
pub fn run(args: &ReplayArgs) -> i32 {
    let script = match Script::read(&args.script) {
        Ok(script) => script,
        Err(why) => {
            eprintln!("replay: script {}: {why}", args.script.display());
            return 2;
        }
    };
    let listener = match TcpListener::bind(&args.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("replay: cannot listen on {}: {e}", args.listen);
            return 1;
        }
    };
    say(&format!(
        "replay: serving {} replies from {} as `{}` on {}",
        script.replies.len(),
        args.script.display(),
        args.alias,
        args.listen
    ));
    server::serve(&listener, &args.alias, move |index, request| {
        // The number first, for people reading the log.
        say(&format!("{{\"request\":{},\"body\":{request}}}", index + 1));
        script.answer(index, &request)
    });
    0
}

/// One line on stdout, at once: a container's log is all there is to read.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use crate::agent::test_server::Server;

    #[test]
    fn health_and_models_answer_and_other_paths_do_not() {
        let url = Server::replaying("{\"content\": \"hi\"}").url;
        let http = crate::agent::chat::http_agent(std::time::Duration::from_secs(2));
        let mut health = http.get(format!("{url}/health")).call().expect("health");
        assert_eq!(health.status().as_u16(), 200);
        assert_eq!(
            health.body_mut().read_to_string().expect("body"),
            r#"{"status":"ok"}"#
        );
        let mut models = http.get(format!("{url}/v1/models")).call().expect("models");
        assert_eq!(
            models.body_mut().read_to_string().expect("body"),
            r#"{"data":[{"id":"test","object":"model","owned_by":"openmono"}],"object":"list"}"#
        );
        let mut missing = http.get(format!("{url}/nowhere")).call().expect("404");
        assert_eq!(missing.status().as_u16(), 404);
        assert_eq!(
            missing.body_mut().read_to_string().expect("body"),
            r#"{"error":{"code":404,"message":"no route for GET /nowhere","type":"invalid_request_error"}}"#
        );
    }
}
