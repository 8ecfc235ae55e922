//! `openmono agent`: the loop that runs inside the agent container.
//!
//! In go the model server's URL, the task's prompt and the budgets ([`AgentArgs`]); out
//! come [`AgentEvent`]s on stdout, one JSON line each, ending with `final`, and an exit
//! code. Each step sends the conversation to the model; if the reply calls tools, they
//! run (see [`shell`]) and their results join the conversation for the next step; a reply
//! without tool calls is the final answer. The loop stops early only when the model
//! server cannot be used; a tool that fails is an answer to the model, never an error.

pub mod chat;
pub mod event;
pub mod init;
pub mod probe;
pub mod shell;
pub mod supervise;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use self::chat::{ChatClient, FunctionCall, Message, Reply, ToolCall};
pub use self::event::{AgentEvent, EndReason};
use self::shell::Shell;

/// Arguments of `openmono agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Base URL of the model server, e.g. `http://coder:8080`
    #[arg(long)]
    pub model_url: String,
    /// Model name sent in requests
    #[arg(long, default_value = "default")]
    pub model: String,
    /// The task's prompt
    #[arg(long)]
    pub prompt: String,
    /// Most model turns before giving up
    #[arg(long, default_value_t = 20)]
    pub max_steps: u32,
    /// Most tokens in one model reply
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: u32,
    /// Seconds one shell command may run
    #[arg(long, default_value_t = 60)]
    pub tool_timeout: u64,
    /// Seconds to wait for one model reply
    #[arg(long, default_value_t = 600)]
    pub request_timeout: u64,
}

/// Longest tool output copied into a `tool_result` event; the model gets all of it.
const EVENT_OUTPUT_LIMIT: usize = 2048;

/// Runs the agent to its end in the current directory, printing events on stdout;
/// returns the process exit code: 0 the model gave a final answer, 2 the step budget ran
/// out, 3 the model could not be reached or answered with an error.
#[must_use]
pub fn run(args: &AgentArgs) -> i32 {
    let workdir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let stdout = io::stdout();
    let mut out = stdout.lock();
    run_in(args, &workdir, &mut out)
}

/// [`run`] with the tools working in `workdir` and the events written to `out`.
pub fn run_in(args: &AgentArgs, workdir: &Path, out: &mut impl Write) -> i32 {
    Session::new(args, workdir, out).run()
}

/// One run of the loop: the conversation so far and where its effects go.
struct Session<'a, W: Write> {
    args: &'a AgentArgs,
    client: ChatClient,
    /// The conversation, resent in full on every step.
    messages: Vec<Message>,
    out: &'a mut W,
    shell: Shell,
    /// The tool declarations sent with every request.
    tools: Vec<Value>,
    workdir: &'a Path,
}

impl<'a, W: Write> Session<'a, W> {
    fn new(args: &'a AgentArgs, workdir: &'a Path, out: &'a mut W) -> Self {
        let system = format!(
            "You are a coding agent working in the directory {} inside a container. \
             You can run shell commands with the `shell` tool: each call runs `sh -c` in \
             that directory with empty stdin, may take at most {} seconds, and returns the \
             exit code and the combined output. Inspect before you change things, and check \
             your work by running it. When the task is done, reply with a short plain-text \
             final answer and no tool call.",
            workdir.display(),
            args.tool_timeout
        );
        Self {
            args,
            client: ChatClient::new(
                &args.model_url,
                &args.model,
                args.max_tokens,
                Duration::from_secs(args.request_timeout),
            ),
            messages: vec![Message::system(system), Message::user(args.prompt.clone())],
            out,
            shell: Shell::new(Duration::from_secs(args.tool_timeout)),
            tools: vec![Shell::spec()],
            workdir,
        }
    }

    fn run(mut self) -> i32 {
        self.emit(&AgentEvent::Start {
            model: self.args.model.clone(),
            model_url: self.args.model_url.clone(),
            max_steps: self.args.max_steps,
        });
        // The latest text the model wrote, the best answer there is if the run ends early.
        let mut last_text = String::new();
        for step in 1..=self.args.max_steps {
            let reply = match self.client.complete(&self.messages, &self.tools) {
                Ok(reply) => reply,
                Err(error) => {
                    self.emit(&AgentEvent::Error {
                        message: error.to_string(),
                    });
                    return self.finish(last_text, step - 1, error.end_reason());
                }
            };
            self.emit(&AgentEvent::ModelTurn {
                step,
                content: reply.content.clone(),
                tool_calls: u32::try_from(reply.tool_calls.len()).unwrap_or(u32::MAX),
                prompt_tokens: reply.usage.prompt_tokens,
                completion_tokens: reply.usage.completion_tokens,
            });
            let text = reply.content.as_deref().map(str::trim).unwrap_or_default();
            if reply.tool_calls.is_empty() {
                return self.finish(text.to_owned(), step, EndReason::Done);
            }
            if !text.is_empty() {
                text.clone_into(&mut last_text);
            }
            self.call_tools(step, reply);
        }
        self.finish(last_text, self.args.max_steps, EndReason::BudgetSpent)
    }

    /// Replays the model's turn into the conversation, then runs each of its tool calls
    /// and adds the results.
    fn call_tools(&mut self, step: u32, reply: Reply) {
        let calls: Vec<ToolCall> = reply
            .tool_calls
            .into_iter()
            .enumerate()
            .map(|(index, mut call)| {
                // Results are matched to calls by id, so every call needs one.
                if call.id.is_empty() {
                    call.id = format!("call_{step}_{index}");
                }
                call
            })
            .collect();
        self.messages
            .push(Message::assistant(reply.content, calls.clone()));
        for call in calls {
            self.emit(&AgentEvent::ToolCall {
                step,
                id: call.id.clone(),
                name: call.function.name.clone(),
                arguments: call.function.arguments.clone(),
            });
            let (exit_code, text) = self.execute(&call.function);
            let shown = chat::excerpt(&text, EVENT_OUTPUT_LIMIT);
            self.emit(&AgentEvent::ToolResult {
                step,
                id: call.id.clone(),
                exit_code,
                truncated: shown.len() < text.len(),
                output: shown,
            });
            self.messages.push(Message::tool(call.id, text));
        }
    }

    /// Runs one tool call; returns the command's exit code, if it got that far, and the
    /// text for the model. Mistakes in the call come back as text for the model to fix.
    fn execute(&self, function: &FunctionCall) -> (Option<i32>, String) {
        if function.name != "shell" {
            return (
                None,
                format!(
                    "error: there is no tool named `{}`; the only tool is `shell`",
                    function.name
                ),
            );
        }
        match shell_command(&function.arguments) {
            Ok(command) => {
                let output = self.shell.run(&command, self.workdir);
                (output.exit_code(), output.to_model_text())
            }
            Err(message) => (None, message),
        }
    }

    fn finish(&mut self, answer: String, steps: u32, reason: EndReason) -> i32 {
        self.emit(&AgentEvent::Final {
            answer,
            steps,
            reason,
        });
        reason.exit_code()
    }

    /// Writes one event line and flushes it, so the host sees progress as it happens.
    fn emit(&mut self, event: &AgentEvent) {
        let line = event.to_line();
        // If the host stopped listening there is nobody left to tell; carry on so the
        // exit code still reflects the run.
        let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
    }
}

/// The `command` out of the shell tool's JSON arguments, or a message for the model.
fn shell_command(arguments: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct ShellArguments {
        command: String,
    }
    const USAGE: &str = r#"call `shell` with arguments like {"command": "ls -la"}"#;
    let value: Value = serde_json::from_str(arguments)
        .map_err(|error| format!("error: the arguments are not valid JSON ({error}); {USAGE}"))?;
    // Some models encode the arguments twice: a JSON string holding the JSON object.
    let value = match value {
        Value::String(inner) => serde_json::from_str(&inner).unwrap_or(Value::String(inner)),
        other => other,
    };
    serde_json::from_value::<ShellArguments>(value)
        .map(|arguments| arguments.command)
        .map_err(|error| format!("error: bad arguments for `shell` ({error}); {USAGE}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread;

    /// A model server that replays canned `(status, body)` replies, one per connection,
    /// repeating the last; it hands every request body it got to the test.
    struct Server {
        requests: mpsc::Receiver<Value>,
        url: String,
    }

    impl Server {
        fn start(replies: Vec<(u16, String)>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("address"));
            let (requests_tx, requests) = mpsc::channel();
            // The thread ends with the test process; it only ever blocks in accept.
            thread::spawn(move || {
                for (index, stream) in listener.incoming().enumerate() {
                    let Ok(stream) = stream else { continue };
                    let reply = replies.get(index).or(replies.last()).cloned();
                    let Some((status, body)) = reply else { return };
                    answer(stream, &requests_tx, status, &body);
                }
            });
            Self { requests, url }
        }

        fn received(&self) -> Vec<Value> {
            self.requests.try_iter().collect()
        }
    }

    /// Reads one request and answers it; status 0 means never answer.
    fn answer(stream: TcpStream, requests: &mpsc::Sender<Value>, status: u16, body: &str) {
        let mut reader = BufReader::new(stream);
        let mut length = 0;
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim() != "" {
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("content-length");
            }
            line.clear();
        }
        let mut request = vec![0; length];
        reader.read_exact(&mut request).expect("request body");
        let _ = requests.send(serde_json::from_slice(&request).expect("JSON request"));
        if status == 0 {
            thread::sleep(Duration::from_secs(5));
            return;
        }
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = reader.get_mut().write_all(response.as_bytes());
    }

    fn tool_reply(content: Option<&str>, id: &str, name: &str, arguments: &str) -> (u16, String) {
        let body = serde_json::json!({
            "choices": [{"message": {"role": "assistant", "content": content, "tool_calls": [
                {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}
            ]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10}
        });
        (200, body.to_string())
    }

    fn text_reply(content: Option<&str>) -> (u16, String) {
        let body = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]});
        (200, body.to_string())
    }

    fn args(url: &str, max_steps: u32) -> AgentArgs {
        AgentArgs {
            model_url: url.to_owned(),
            model: "test-model".to_owned(),
            prompt: "do the thing".to_owned(),
            max_steps,
            max_tokens: 64,
            tool_timeout: 10,
            request_timeout: 2,
        }
    }

    /// A fresh empty directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("openmono-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// Runs the loop in `dir`; returns the exit code and the events, all of which must
    /// parse.
    fn run_agent(args: &AgentArgs, dir: &Path) -> (i32, Vec<AgentEvent>) {
        let mut out = Vec::new();
        let code = run_in(args, dir, &mut out);
        let text = String::from_utf8(out).expect("UTF-8 events");
        let events = text
            .lines()
            .map(|line| AgentEvent::parse_line(line).unwrap_or_else(|| panic!("bad line {line:?}")))
            .collect();
        (code, events)
    }

    fn last_message(request: &Value) -> &Value {
        request["messages"]
            .as_array()
            .and_then(|messages| messages.last())
            .expect("messages")
    }

    #[test]
    fn runs_a_tool_call_then_ends_with_the_answer() {
        let server = Server::start(vec![
            tool_reply(None, "c1", "shell", r#"{"command":"echo hi > f.txt"}"#),
            text_reply(Some("  wrote f.txt\n")),
        ]);
        let dir = scratch("tool-call");
        let (code, events) = run_agent(&args(&server.url, 5), &dir);
        assert_eq!(code, 0);
        assert_eq!(
            std::fs::read_to_string(dir.join("f.txt")).ok().as_deref(),
            Some("hi\n")
        );
        assert_eq!(
            events,
            vec![
                AgentEvent::Start {
                    model: "test-model".into(),
                    model_url: server.url.clone(),
                    max_steps: 5
                },
                AgentEvent::ModelTurn {
                    step: 1,
                    content: None,
                    tool_calls: 1,
                    prompt_tokens: Some(100),
                    completion_tokens: Some(10)
                },
                AgentEvent::ToolCall {
                    step: 1,
                    id: "c1".into(),
                    name: "shell".into(),
                    arguments: r#"{"command":"echo hi > f.txt"}"#.into()
                },
                AgentEvent::ToolResult {
                    step: 1,
                    id: "c1".into(),
                    exit_code: Some(0),
                    output: "exit code 0\n(no output)".into(),
                    truncated: false
                },
                AgentEvent::ModelTurn {
                    step: 2,
                    content: Some("  wrote f.txt\n".into()),
                    tool_calls: 0,
                    prompt_tokens: None,
                    completion_tokens: None
                },
                AgentEvent::Final {
                    answer: "wrote f.txt".into(),
                    steps: 2,
                    reason: EndReason::Done
                },
            ]
        );
        let requests = server.received();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0]["model"], "test-model");
        assert_eq!(requests[0]["tools"][0]["function"]["name"], "shell");
        assert_eq!(requests[0]["messages"][1]["content"], "do the thing");
        let messages = requests[1]["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[2]["role"], "assistant");
        assert_eq!(messages[2]["tool_calls"][0]["id"], "c1");
        assert_eq!(
            messages[3],
            serde_json::json!({"role": "tool", "tool_call_id": "c1", "content": "exit code 0\n(no output)"})
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn stops_when_the_step_budget_is_spent() {
        let server = Server::start(vec![tool_reply(
            Some("still working"),
            "c",
            "shell",
            r#"{"command":"true"}"#,
        )]);
        let dir = scratch("budget");
        let (code, events) = run_agent(&args(&server.url, 3), &dir);
        assert_eq!(code, 2);
        assert_eq!(server.received().len(), 3);
        let turns = events
            .iter()
            .filter(|e| matches!(e, AgentEvent::ModelTurn { .. }))
            .count();
        assert_eq!(turns, 3);
        assert_eq!(
            events.last(),
            Some(&AgentEvent::Final {
                answer: "still working".into(),
                steps: 3,
                reason: EndReason::BudgetSpent
            })
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_error_status_ends_with_model_error() {
        let server = Server::start(vec![(500, "  {\"error\":\"boom\"}\n".into())]);
        let (code, events) = run_agent(&args(&server.url, 3), Path::new("/"));
        assert_eq!(code, 3);
        let [
            ..,
            AgentEvent::Error { message },
            AgentEvent::Final {
                answer,
                steps,
                reason,
            },
        ] = events.as_slice()
        else {
            panic!("unexpected events {events:?}");
        };
        assert!(
            message.contains("500") && message.ends_with(r#"{"error":"boom"}"#),
            "{message}"
        );
        assert_eq!(
            (answer.as_str(), *steps, *reason),
            ("", 0, EndReason::ModelError)
        );
    }

    #[test]
    fn an_unreadable_reply_ends_with_model_error() {
        let server = Server::start(vec![(200, "<html>hello</html>".into())]);
        let (code, events) = run_agent(&args(&server.url, 3), Path::new("/"));
        assert_eq!(code, 3);
        assert!(matches!(
            events.last(),
            Some(AgentEvent::Final {
                reason: EndReason::ModelError,
                ..
            })
        ));
    }

    #[test]
    fn nothing_listening_ends_with_model_unreachable() {
        // A port that was just free: bind, note it, let it go.
        let url = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", listener.local_addr().expect("address"))
        };
        let (code, events) = run_agent(&args(&url, 3), Path::new("/"));
        assert_eq!(code, 3);
        assert!(
            matches!(events.get(1), Some(AgentEvent::Error { .. })),
            "{events:?}"
        );
        assert_eq!(
            events.last(),
            Some(&AgentEvent::Final {
                answer: String::new(),
                steps: 0,
                reason: EndReason::ModelUnreachable
            })
        );
    }

    #[test]
    fn a_silent_server_times_out_as_unreachable() {
        let server = Server::start(vec![(0, String::new())]);
        let mut args = args(&server.url, 3);
        args.request_timeout = 1;
        let (code, events) = run_agent(&args, Path::new("/"));
        assert_eq!(code, 3);
        assert!(matches!(
            events.last(),
            Some(AgentEvent::Final {
                reason: EndReason::ModelUnreachable,
                ..
            })
        ));
    }

    #[test]
    fn null_content_is_an_empty_answer() {
        let server = Server::start(vec![text_reply(None)]);
        let (code, events) = run_agent(&args(&server.url, 3), Path::new("/"));
        assert_eq!(code, 0);
        assert_eq!(
            events.last(),
            Some(&AgentEvent::Final {
                answer: String::new(),
                steps: 1,
                reason: EndReason::Done
            })
        );
    }

    #[test]
    fn malformed_arguments_are_answered_with_an_error() {
        let server = Server::start(vec![
            tool_reply(None, "", "shell", r#"{"command": "echo hi"#),
            text_reply(Some("sorry")),
        ]);
        let dir = scratch("malformed");
        let (code, events) = run_agent(&args(&server.url, 5), &dir);
        assert_eq!(code, 0);
        let requests = server.received();
        assert_eq!(requests.len(), 2);
        let result = last_message(&requests[1]);
        assert_eq!(result["tool_call_id"], "call_1_0");
        let text = result["content"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("error: the arguments are not valid JSON"),
            "{text}"
        );
        assert!(events.iter().any(|e| matches!(
            e,
            AgentEvent::ToolResult {
                exit_code: None,
                ..
            }
        )));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unknown_tools_are_answered_with_an_error() {
        let server = Server::start(vec![
            tool_reply(None, "c1", "python", r#"{"code":"1"}"#),
            text_reply(Some("ok")),
        ]);
        let (code, _) = run_agent(&args(&server.url, 5), Path::new("/"));
        assert_eq!(code, 0);
        let requests = server.received();
        assert_eq!(
            last_message(&requests[1])["content"],
            "error: there is no tool named `python`; the only tool is `shell`"
        );
    }

    #[test]
    fn long_tool_output_is_shortened_in_events_only() {
        let server = Server::start(vec![
            tool_reply(None, "c1", "shell", r#"{"command":"yes | head -c 10000"}"#),
            text_reply(Some("ok")),
        ]);
        let (code, events) = run_agent(&args(&server.url, 5), Path::new("/"));
        assert_eq!(code, 0);
        let Some(AgentEvent::ToolResult {
            output, truncated, ..
        }) = events
            .iter()
            .find(|e| matches!(e, AgentEvent::ToolResult { .. }))
        else {
            panic!("no tool result in {events:?}");
        };
        assert!(*truncated);
        assert!(output.len() <= EVENT_OUTPUT_LIMIT + '…'.len_utf8());
        let sent = server.received();
        let full = last_message(&sent[1])["content"]
            .as_str()
            .unwrap_or_default()
            .len();
        assert_eq!(full, "exit code 0\n".len() + 10_000);
    }

    #[test]
    fn shell_arguments_are_read_leniently() {
        assert_eq!(shell_command(r#"{"command":"ls"}"#), Ok("ls".into()));
        assert_eq!(shell_command(r#""{\"command\":\"ls\"}""#), Ok("ls".into()));
        assert!(
            shell_command(r#"{"cmd":"ls"}"#).is_err_and(|e| e.starts_with("error: bad arguments"))
        );
        assert!(shell_command("").is_err());
    }
}
