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
    use super::*;
    use crate::agent::{AgentArgs, AgentEvent, EndReason, run_in};

    /// Serves `script` on a free port of 127.0.0.1; returns its URL.
    fn serve_script(script: &str) -> String {
        let script = Script::parse(script).expect("script");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            server::serve(&listener, "scripted", move |index, request| {
                script.answer(index, &request)
            });
        });
        url
    }

    fn agent(url: &str, dir: &std::path::Path) -> (i32, Vec<AgentEvent>) {
        let args = AgentArgs {
            model_url: url.to_owned(),
            model: "scripted".to_owned(),
            prompt: "fix it".to_owned(),
            max_steps: 5,
            max_tokens: 64,
            tool_timeout: 10,
            connect_timeout: 2,
            first_token_timeout: 2,
            idle_timeout: 2,
            text_tools: false,
        };
        let mut out = Vec::new();
        let code = run_in(&args, dir, &mut out);
        let events = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(AgentEvent::parse_line)
            .collect();
        (code, events)
    }

    #[test]
    fn the_agent_assembles_arguments_split_across_chunks_and_overflows_are_compacted() {
        let url = serve_script(
            "{\"content\": \"Writing.\", \"tool_calls\": [{\"id\": \"w\", \"name\": \"write_file\", \"arguments\": {\"path\": \"a.txt\", \"content\": \"fixed\\n\"}}], \"chunks\": 7}\n\
             {\"overflow\": 400}\n\
             {\"content\": \"Done.\", \"chunks\": 3}\n",
        );
        let dir = std::env::temp_dir().join(format!("openmono-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (code, events) = agent(&url, &dir);
        assert_eq!(code, 0, "{events:?}");
        assert_eq!(
            std::fs::read_to_string(dir.join("a.txt")).ok().as_deref(),
            Some("fixed\n")
        );
        assert!(events.contains(&AgentEvent::ToolCall {
            step: 1,
            id: "w".into(),
            name: "write_file".into(),
            arguments: r#"{"content":"fixed\n","path":"a.txt"}"#.into()
        }));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, AgentEvent::Compacted { step: 2, .. }))
        );
        assert_eq!(
            events.last(),
            Some(&AgentEvent::Final {
                answer: "Done.".into(),
                steps: 2,
                reason: EndReason::Done
            })
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn health_and_models_answer_and_a_cut_reply_is_a_lost_connection() {
        let url = serve_script("{\"content\": \"abcdef\", \"chunks\": 3, \"end\": \"cut\"}");
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
            r#"{"data":[{"id":"scripted","object":"model","owned_by":"openmono"}],"object":"list"}"#
        );
        let missing = http.get(format!("{url}/nowhere")).call().expect("404");
        assert_eq!(missing.status().as_u16(), 404);
        let (code, events) = agent(&url, std::path::Path::new("/"));
        assert_eq!(code, 3);
        assert!(
            matches!(&events[..], [_, AgentEvent::Error { message }, AgentEvent::Final { reason: EndReason::ModelUnreachable, .. }] if message.contains("the reply broke off")),
            "{events:?}"
        );
    }
}
