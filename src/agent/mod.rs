//! `openmono agent`: the loop that runs inside the agent container.
//!
//! In go the model server's URL, the task's prompt and the budgets ([`AgentArgs`]); out
//! come [`AgentEvent`]s on stdout, one JSON line each, ending with `final`, and an exit
//! code. Each step sends the conversation to the model ([`chat`]); if the reply calls
//! tools, natively or in text ([`text_tools`]), they run ([`toolbox`]) and their
//! results join the conversation for the next step; a reply without tool calls is the
//! final answer. A conversation that outgrows the model's context is compacted
//! ([`conversation`]); a server that refuses native tool calls gets them in text. The
//! loop stops early only when the model server cannot be used; a tool that fails is an
//! answer to the model, never an error.

pub mod chat;
pub mod check;
pub mod conversation;
pub mod event;
pub mod file_tools;
pub mod init;
pub mod mcp;
pub mod message;
pub mod probe;
pub mod reply;
pub mod routes;
pub mod search;
pub mod self_test;
pub mod shell;
pub mod supervise;
#[cfg(test)]
pub(crate) mod test_server;
pub mod text_tools;
pub mod tool_args;
pub mod toolbox;
pub mod workspace;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use self::chat::{ChatClient, ChatError, Timeouts};
use self::check::Check;
use self::conversation::Conversation;
pub use self::event::{AgentEvent, EndReason};
use self::mcp::{McpServers, McpSpec};
use self::message::{Message, ToolCall};
use self::reply::{Reply, excerpt};
use self::text_tools::find_calls;
use self::toolbox::Toolbox;

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
    /// Seconds to wait for the model server to accept a connection
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds to wait for the first token of a reply (reading the prompt comes first)
    #[arg(long, alias = "request-timeout", default_value_t = 600)]
    pub first_token_timeout: u64,
    /// Seconds a streamed reply may stall between two chunks
    #[arg(long, default_value_t = 120)]
    pub idle_timeout: u64,
    /// Milliseconds the whole task may take: then the agent ends with `time_spent`, in
    /// the middle of a reply or a tool call if need be
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Describe the tools in the system prompt and read calls from the reply's text
    #[arg(long)]
    pub text_tools: bool,
    /// The task's check: run after a final answer; while it fails and retries are
    /// left, its output goes back to the model for another round
    #[arg(long)]
    pub check: Option<String>,
    /// How many more rounds the model gets while the check fails
    #[arg(long, default_value_t = 0, requires = "check")]
    pub check_retries: u32,
    /// Seconds the check may run
    #[arg(long, default_value_t = 3600)]
    pub check_timeout: u64,
    /// An MCP server to start over stdio, its tools offered as `NAME__TOOL` (repeatable)
    #[arg(long, value_name = "NAME=COMMAND", value_parser = McpSpec::parse)]
    pub mcp: Vec<McpSpec>,
}

/// Longest tool output copied into a `tool_result` event; the model gets all of it.
const EVENT_OUTPUT_LIMIT: usize = 2048;

/// Runs the agent to its end in the current directory, printing events on stdout;
/// returns the process exit code: 0 the model gave a final answer, 2 the step budget ran
/// out, 3 the model could not be reached, took too long, answered with an error, or the
/// conversation no longer fits its context.
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
    /// The check run between rounds, when the task has one with retries.
    check: Option<Check>,
    client: ChatClient,
    conversation: Conversation,
    /// When the task's time (`--timeout`) runs out.
    deadline: Option<Instant>,
    /// The tool declarations sent with every request while tools are native.
    declarations: Vec<Value>,
    out: &'a mut W,
    /// Whether tools are described in the system prompt and called in text.
    text_tools: bool,
    toolbox: Toolbox,
    workdir: &'a Path,
}

/// The tool calls of one model turn, as the model made them.
enum Calls {
    /// In the reply's `tool_calls`; results go back as `tool` messages.
    Native(Vec<ToolCall>),
    /// In fenced `tool` blocks of its text; results go back in one user message.
    Text(Vec<text_tools::TextCall>),
}

impl<'a, W: Write> Session<'a, W> {
    fn new(args: &'a AgentArgs, workdir: &'a Path, out: &'a mut W) -> Self {
        let timeouts = Timeouts {
            connect: Duration::from_secs(args.connect_timeout),
            first_token: Duration::from_secs(args.first_token_timeout),
            idle: Duration::from_secs(args.idle_timeout),
        };
        let deadline = args
            .timeout_ms
            .and_then(|t| Instant::now().checked_add(Duration::from_millis(t)));
        let toolbox =
            Toolbox::new(workdir, Duration::from_secs(args.tool_timeout)).with_deadline(deadline);
        Self {
            args,
            check: args.check.as_ref().map(|command| {
                Check::new(
                    command.clone(),
                    args.check_retries,
                    Duration::from_secs(args.check_timeout),
                )
            }),
            client: ChatClient::new(&args.model_url, &args.model, args.max_tokens, timeouts)
                .with_deadline(deadline.zip(args.timeout_ms.map(Duration::from_millis))),
            conversation: Conversation::new(
                system_prompt(
                    workdir,
                    args.tool_timeout,
                    args.text_tools.then_some(&toolbox),
                ),
                args.prompt.clone(),
            ),
            deadline,
            declarations: toolbox.declarations(),
            out,
            text_tools: args.text_tools,
            toolbox,
            workdir,
        }
    }

    fn run(mut self) -> i32 {
        self.emit(&AgentEvent::Start {
            model: self.args.model.clone(),
            model_url: self.args.model_url.clone(),
            max_steps: self.args.max_steps,
        });
        self.start_mcp();
        // The latest text the model wrote, the best answer there is if the run ends early.
        let mut last_text = String::new();
        // Rounds end with a final answer; a failing check starts the next one.
        let mut round = 1;
        for step in 1..=self.args.max_steps {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return self.finish(last_text, step - 1, EndReason::TimeSpent);
            }
            let reply = match self.ask(step) {
                Ok(reply) => reply,
                Err(reason) => return self.finish(last_text, step - 1, reason),
            };
            let calls = if reply.tool_calls.is_empty() {
                Calls::Text(find_calls(reply.content.as_deref().unwrap_or_default()))
            } else {
                Calls::Native(reply.tool_calls.clone())
            };
            let count = match &calls {
                Calls::Native(calls) => calls.len(),
                Calls::Text(calls) => calls.len(),
            };
            self.emit(&AgentEvent::ModelTurn {
                step,
                content: reply.content.clone(),
                tool_calls: u32::try_from(count).unwrap_or(u32::MAX),
                prompt_tokens: reply.usage.prompt_tokens,
                completion_tokens: reply.usage.completion_tokens,
            });
            let text = reply.content.as_deref().map(str::trim).unwrap_or_default();
            if !text.is_empty() {
                text.clone_into(&mut last_text);
            }
            if count == 0 {
                let answer = text.to_owned();
                if self.check_fails(round, step, reply.content) {
                    round += 1;
                    continue;
                }
                return self.finish(answer, step, EndReason::Done);
            }
            match calls {
                Calls::Native(calls) => self.call_native(step, reply, calls),
                Calls::Text(calls) => self.call_in_text(step, reply, calls),
            }
        }
        self.finish(last_text, self.args.max_steps, EndReason::BudgetSpent)
    }

    /// Sends the conversation until the model answers: compacting it while the server
    /// says it exceeds the context, and switching to tools in text if the server refuses
    /// native ones. Every retry follows a change of the conversation, so the same
    /// request is never sent twice.
    fn ask(&mut self, step: u32) -> Result<Reply, EndReason> {
        loop {
            let tools: &[Value] = if self.text_tools {
                &[]
            } else {
                &self.declarations
            };
            let error = match self.client.complete(self.conversation.messages(), tools) {
                Ok(reply) => return Ok(reply),
                Err(error) => error,
            };
            match error {
                ChatError::ContextExceeded { message, .. } => {
                    let Some(compaction) = self.conversation.compact() else {
                        self.emit(&AgentEvent::Error {
                            message: format!(
                                "the conversation exceeds the model's context and cannot \
                                 be compacted further: {message}"
                            ),
                        });
                        return Err(EndReason::ContextFull);
                    };
                    self.emit(&AgentEvent::Compacted {
                        step,
                        reason: message,
                        dropped_turns: compaction.dropped_turns,
                        elided: compaction.elided,
                        bytes_before: compaction.bytes_before,
                        bytes_after: compaction.bytes_after,
                    });
                }
                ChatError::ToolsRejected { message, .. } if !self.text_tools => {
                    self.text_tools = true;
                    self.conversation.set_system(system_prompt(
                        self.workdir,
                        self.args.tool_timeout,
                        Some(&self.toolbox),
                    ));
                    self.emit(&AgentEvent::TextTools {
                        step,
                        reason: message,
                    });
                }
                error => {
                    self.emit(&AgentEvent::Error {
                        message: error.to_string(),
                    });
                    return Err(error.end_reason());
                }
            }
        }
    }

    /// Starts the task's MCP servers and offers their tools from the first request on;
    /// a server that does not come up is reported and left out.
    fn start_mcp(&mut self) {
        if self.args.mcp.is_empty() {
            return;
        }
        let (servers, starts) = McpServers::start(
            &self.args.mcp,
            self.workdir,
            Duration::from_secs(self.args.tool_timeout),
        );
        for start in starts {
            self.emit(&AgentEvent::McpServer {
                server: start.server,
                tools: start.tools,
                error: start.error,
            });
        }
        self.toolbox.set_mcp(servers);
        self.declarations = self.toolbox.declarations();
        if self.text_tools {
            self.conversation.set_system(system_prompt(
                self.workdir,
                self.args.tool_timeout,
                Some(&self.toolbox),
            ));
        }
    }

    /// After round `round`'s final answer `content`: runs the check if a failure can
    /// still lead to another round; when it fails, hands its output to the model and
    /// says so. The next round then goes on within the budgets left.
    fn check_fails(&mut self, round: u32, step: u32, content: Option<String>) -> bool {
        let Some(check) = self.check.as_ref().filter(|check| check.after_round(round)) else {
            return false;
        };
        let output = check.run(self.workdir);
        let feedback = check.feedback(round, &output);
        let text = output.to_model_text();
        let shown = excerpt(&text, EVENT_OUTPUT_LIMIT);
        self.emit(&AgentEvent::Check {
            round,
            step,
            exit_code: output.exit_code(),
            truncated: shown.len() < text.trim().len(),
            output: shown,
        });
        if output.exit_code() == Some(0) {
            return false;
        }
        self.conversation
            .push(Message::assistant(content, Vec::new()));
        self.conversation.push(Message::user(feedback));
        true
    }

    /// Replays the model's turn into the conversation, then runs each of its native
    /// tool calls and adds the results.
    fn call_native(&mut self, step: u32, reply: Reply, calls: Vec<ToolCall>) {
        let calls: Vec<ToolCall> = calls
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
        self.conversation
            .push(Message::assistant(reply.content, calls.clone()));
        for call in calls {
            let text = self.call(
                step,
                &call.id,
                &call.function.name,
                &call.function.arguments,
                None,
            );
            self.conversation.push(Message::tool(call.id, text));
        }
    }

    /// Replays the model's turn as text, runs the calls written in it and answers them
    /// all in one user message (strict chat templates want user and assistant turns to
    /// alternate).
    fn call_in_text(&mut self, step: u32, reply: Reply, calls: Vec<text_tools::TextCall>) {
        self.conversation
            .push(Message::assistant(reply.content, Vec::new()));
        let mut results = Vec::new();
        for (index, call) in calls.into_iter().enumerate() {
            let id = format!("call_{step}_{index}");
            let text = self.call(step, &id, &call.name, &call.arguments, call.problem);
            results.push(format!("Result of `{}` ({id}):\n{text}", call.name));
        }
        self.conversation.push(Message::user(results.join("\n\n")));
    }

    /// Runs one call (or answers it with `problem`), with its events; returns the text
    /// for the model.
    fn call(
        &mut self,
        step: u32,
        id: &str,
        name: &str,
        arguments: &str,
        problem: Option<String>,
    ) -> String {
        self.emit(&AgentEvent::ToolCall {
            step,
            id: id.to_owned(),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        });
        let outcome = match problem {
            Some(text) => toolbox::ToolOutcome {
                exit_code: None,
                text,
            },
            None => self.toolbox.run(name, arguments),
        };
        let shown = excerpt(&outcome.text, EVENT_OUTPUT_LIMIT);
        self.emit(&AgentEvent::ToolResult {
            step,
            id: id.to_owned(),
            exit_code: outcome.exit_code,
            truncated: shown.len() < outcome.text.trim().len(),
            output: shown,
        });
        outcome.text
    }

    fn finish(&mut self, answer: String, steps: u32, reason: EndReason) -> i32 {
        self.toolbox.stop_mcp();
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

/// What the model is told first: where it works, how the tools behave, when it is done;
/// with tools in text (`text_tools`: the tools to describe), how to call them.
fn system_prompt(workdir: &Path, tool_timeout: u64, text_tools: Option<&Toolbox>) -> String {
    let mut prompt = format!(
        "You are a coding agent working in the directory {} inside a container. Use the \
         tools to read, search and change files and to run commands; relative paths start \
         from that directory. Shell commands run with `sh -c` there, with empty stdin, for \
         at most {tool_timeout} seconds each. Inspect before you change things, and check \
         your work by running it. When the task is done, reply with a short plain-text \
         final answer and no tool call.",
        workdir.display()
    );
    if let Some(toolbox) = text_tools {
        prompt.push_str("\n\n");
        prompt.push_str(&text_tools::instructions(toolbox));
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::test_server::{Canned, Server, streamed, streamed_call, streamed_text};
    use super::*;
    use std::net::TcpListener;

    fn args(url: &str, max_steps: u32) -> AgentArgs {
        AgentArgs {
            model_url: url.to_owned(),
            model: "test-model".to_owned(),
            prompt: "do the thing".to_owned(),
            max_steps,
            max_tokens: 64,
            tool_timeout: 10,
            connect_timeout: 2,
            first_token_timeout: 2,
            idle_timeout: 2,
            timeout_ms: None,
            text_tools: false,
            check: None,
            check_retries: 0,
            check_timeout: 10,
            mcp: Vec::new(),
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

    fn json_reply(message: &Value) -> Canned {
        let body = serde_json::json!({
            "choices": [{"message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}
        });
        Canned::Json(200, body.to_string())
    }

    fn events_of<'e>(events: &'e [AgentEvent], tag: &str) -> Vec<&'e AgentEvent> {
        events
            .iter()
            .filter(|event| {
                event
                    .to_line()
                    .starts_with(&format!("{{\"event\":\"{tag}\""))
            })
            .collect()
    }

    #[test]
    fn runs_a_tool_call_then_ends_with_the_answer() {
        let server = Server::start(vec![
            streamed_call("c1", "shell", r#"{"command":"echo hi > f.txt"}"#),
            streamed(Some(&["  wrote", " f.txt\n"]), &[]),
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
                    prompt_tokens: Some(100),
                    completion_tokens: Some(10)
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
        assert_eq!(requests[0]["stream"], true);
        assert_eq!(requests[0]["stream_options"]["include_usage"], true);
        let names: Vec<&str> = requests[0]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|tool| tool["function"]["name"].as_str())
            .collect();
        assert_eq!(names, toolbox::TOOL_NAMES);
        assert_eq!(requests[0]["messages"][1]["content"], "do the thing");
        let messages = requests[1]["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[2]["role"], "assistant");
        assert_eq!(messages[2]["content"], Value::Null);
        assert_eq!(messages[2]["tool_calls"][0]["id"], "c1");
        assert_eq!(
            messages[3],
            serde_json::json!({"role": "tool", "tool_call_id": "c1", "content": "exit code 0\n(no output)"})
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_whole_json_reply_works_too() {
        let server = Server::start(vec![
            json_reply(
                &serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "j1", "type": "function", "function": {"name": "list_dir", "arguments": {"path": "."}}}
                ]}),
            ),
            json_reply(&serde_json::json!({"role": "assistant", "content": "empty"})),
        ]);
        let dir = scratch("json-reply");
        let (code, events) = run_agent(&args(&server.url, 5), &dir);
        assert_eq!(code, 0);
        assert_eq!(
            events[1],
            AgentEvent::ModelTurn {
                step: 1,
                content: None,
                tool_calls: 1,
                prompt_tokens: Some(7),
                completion_tokens: Some(3)
            }
        );
        assert_eq!(
            events[2],
            AgentEvent::ToolCall {
                step: 1,
                id: "j1".into(),
                name: "list_dir".into(),
                arguments: r#"{"path":"."}"#.into()
            }
        );
        let requests = server.received();
        assert_eq!(last_message(&requests[1])["content"], "`.` is empty");
        assert_eq!(
            events.last(),
            Some(&AgentEvent::Final {
                answer: "empty".into(),
                steps: 2,
                reason: EndReason::Done
            })
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn stops_when_the_step_budget_is_spent() {
        let server = Server::start(vec![streamed(
            Some(&["still working"]),
            &[("c", "shell", r#"{"command":"true"}"#)],
        )]);
        let dir = scratch("budget");
        let (code, events) = run_agent(&args(&server.url, 3), &dir);
        assert_eq!(code, 2);
        assert_eq!(server.received().len(), 3);
        assert_eq!(events_of(&events, "model_turn").len(), 3);
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
        let server = Server::start(vec![Canned::Json(500, "  {\"error\":\"boom\"}\n".into())]);
        let (code, events) = run_agent(&args(&server.url, 3), Path::new("/"));
        assert_eq!(code, 3);
        assert_eq!(
            events[1..],
            [
                AgentEvent::Error {
                    message: format!(
                        "model server at {}/v1/chat/completions answered 500: {{\"error\":\"boom\"}}",
                        server.url
                    )
                },
                AgentEvent::Final {
                    answer: String::new(),
                    steps: 0,
                    reason: EndReason::ModelError
                }
            ]
        );
    }

    #[test]
    fn an_unreadable_reply_ends_with_model_error() {
        let server = Server::start(vec![Canned::Json(200, "<html>hello</html>".into())]);
        let (code, events) = run_agent(&args(&server.url, 3), Path::new("/"));
        assert_eq!(code, 3);
        let [
            _,
            AgentEvent::Error { message },
            AgentEvent::Final { reason, .. },
        ] = events.as_slice()
        else {
            panic!("unexpected events {events:?}");
        };
        assert!(
            message.starts_with(&format!(
                "model server at {}/v1/chat/completions sent an unreadable reply: expected value",
                server.url
            )),
            "{message}"
        );
        assert_eq!(*reason, EndReason::ModelError);
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
        let [_, AgentEvent::Error { message }, last] = events.as_slice() else {
            panic!("unexpected events {events:?}");
        };
        assert!(
            message.starts_with(&format!(
                "could not reach the model server at {url}/v1/chat/completions: "
            )),
            "{message}"
        );
        assert_eq!(
            last,
            &AgentEvent::Final {
                answer: String::new(),
                steps: 0,
                reason: EndReason::ModelUnreachable
            }
        );
    }

    #[test]
    fn a_silent_server_ends_with_a_first_token_timeout() {
        let server = Server::start(vec![Canned::Silent]);
        let mut args = args(&server.url, 3);
        args.first_token_timeout = 1;
        let started = std::time::Instant::now();
        let (code, events) = run_agent(&args, Path::new("/"));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(code, 3);
        assert_eq!(
            events[1..],
            [
                AgentEvent::Error {
                    message: format!(
                        "model server at {}/v1/chat/completions: first-token timeout: no \
                         answer began in time (reading a long prompt on a CPU can take \
                         minutes; see --first-token-timeout) (1s)",
                        server.url
                    )
                },
                AgentEvent::Final {
                    answer: String::new(),
                    steps: 0,
                    reason: EndReason::ModelTimeout
                }
            ]
        );
    }

    #[test]
    fn the_tasks_time_ends_a_wait_for_the_model_and_says_so() {
        let server = Server::start(vec![Canned::Silent]);
        let mut args = args(&server.url, 3);
        args.first_token_timeout = 60;
        args.timeout_ms = Some(500);
        let started = std::time::Instant::now();
        let (code, events) = run_agent(&args, Path::new("/"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(code, 124);
        let [_, AgentEvent::Error { message }, last] = events.as_slice() else {
            panic!("unexpected events {events:?}");
        };
        assert!(
            message.starts_with(&format!(
                "model server at {}/v1/chat/completions: the task's time ran out while waiting for the answer (",
                server.url
            )),
            "{message}"
        );
        assert_eq!(
            last,
            &AgentEvent::Final {
                answer: String::new(),
                steps: 0,
                reason: EndReason::TimeSpent
            }
        );
    }

    #[test]
    fn the_tasks_time_cuts_a_tool_call_short_and_ends_the_agent() {
        let server = Server::start(vec![
            streamed_call("c1", "shell", r#"{"command":"sleep 30"}"#),
            streamed(Some(&["never asked"]), &[]),
        ]);
        let mut args = args(&server.url, 5);
        args.timeout_ms = Some(1000);
        let started = std::time::Instant::now();
        let (code, events) = run_agent(&args, &scratch("time-in-tool"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(code, 124);
        assert!(
            events.iter().any(|e| matches!(
                e,
                AgentEvent::ToolResult {
                    exit_code: None,
                    ..
                }
            )),
            "{events:?}"
        );
        assert_eq!(
            events.last(),
            Some(&AgentEvent::Final {
                answer: String::new(),
                steps: 1,
                reason: EndReason::TimeSpent
            })
        );
        assert_eq!(server.received().len(), 1, "asked the model after its time");
    }

    #[test]
    fn null_content_is_an_empty_answer() {
        let server = Server::start(vec![streamed(None, &[])]);
        let (code, events) = run_agent(&args(&server.url, 3), Path::new("/"));
        assert_eq!(code, 0);
        assert_eq!(
            events[1..],
            [
                AgentEvent::ModelTurn {
                    step: 1,
                    content: None,
                    tool_calls: 0,
                    prompt_tokens: Some(100),
                    completion_tokens: Some(10)
                },
                AgentEvent::Final {
                    answer: String::new(),
                    steps: 1,
                    reason: EndReason::Done
                }
            ]
        );
    }

    #[test]
    fn malformed_arguments_are_answered_with_an_error() {
        let server = Server::start(vec![
            streamed_call("", "shell", r#"{"command": "echo hi"#),
            streamed_text("sorry"),
        ]);
        let dir = scratch("malformed");
        let (code, events) = run_agent(&args(&server.url, 5), &dir);
        assert_eq!(code, 0);
        let requests = server.received();
        assert_eq!(requests.len(), 2);
        let result = last_message(&requests[1]);
        assert_eq!(result["tool_call_id"], "call_1_0");
        assert_eq!(
            result["content"],
            "error: the arguments are not valid JSON (EOF while parsing a string at line 1 \
             column 20); call `shell` with arguments like {\"command\": \"ls -la\"}"
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
            streamed_call("c1", "python", r#"{"code":"1"}"#),
            streamed_text("ok"),
        ]);
        let (code, _) = run_agent(&args(&server.url, 5), Path::new("/"));
        assert_eq!(code, 0);
        let requests = server.received();
        assert_eq!(
            last_message(&requests[1])["content"],
            "error: there is no tool named `python`; the tools are shell, read_file, \
             write_file, edit_file, list_dir, search_text"
        );
    }

    #[test]
    fn long_tool_output_is_shortened_in_events_only() {
        let server = Server::start(vec![
            streamed_call("c1", "shell", r#"{"command":"yes | head -c 10000"}"#),
            streamed_text("ok"),
        ]);
        let (code, events) = run_agent(&args(&server.url, 5), Path::new("/"));
        assert_eq!(code, 0);
        let [
            AgentEvent::ToolResult {
                output, truncated, ..
            },
        ] = events_of(&events, "tool_result")[..]
        else {
            panic!("no tool result in {events:?}");
        };
        assert!(*truncated);
        assert_eq!(output.len(), EVENT_OUTPUT_LIMIT + '…'.len_utf8());
        let sent = server.received();
        let full = last_message(&sent[1])["content"]
            .as_str()
            .unwrap_or_default()
            .len();
        assert_eq!(full, "exit code 0\n".len() + 10_000);
    }

    #[test]
    fn the_new_flags_have_defaults_and_the_old_timeout_flag_still_works() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            agent: AgentArgs,
        }
        use clap::Parser as _;
        let base = ["agent", "--model-url", "http://m:8080", "--prompt", "p"];
        let parsed = Cli::try_parse_from(base).expect("defaults").agent;
        assert_eq!(
            (
                parsed.connect_timeout,
                parsed.first_token_timeout,
                parsed.idle_timeout,
                parsed.text_tools
            ),
            (10, 600, 120, false)
        );
        let old =
            Cli::try_parse_from(
                base.iter()
                    .chain(&["--request-timeout", "30", "--text-tools"]),
            )
            .expect("old flag")
            .agent;
        assert_eq!((old.first_token_timeout, old.text_tools), (30, true));
    }

    const OVERFLOW_400: &str = r#"{"error":{"code":400,"message":"request (724 tokens) exceeds the available context size (512 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":724,"n_ctx":512}}"#;
    const OVERFLOW_500: &str = r#"{"error":{"code":500,"message":"the request exceeds the available context size. try increasing the context size or enable context shift","type":"server_error"}}"#;

    /// A tool call whose output is 5012 bytes: "exit code 0\n" and 5000 bytes.
    fn big_output_call() -> Canned {
        streamed_call("c1", "shell", r#"{"command":"yes | head -c 5000"}"#)
    }

    #[test]
    fn an_overflow_in_either_form_is_compacted_and_retried() {
        for (status, body, message) in [
            (
                400,
                OVERFLOW_400,
                "request (724 tokens) exceeds the available context size (512 tokens), try increasing it",
            ),
            (
                500,
                OVERFLOW_500,
                "the request exceeds the available context size. try increasing the context size or enable context shift",
            ),
        ] {
            let server = Server::start(vec![
                big_output_call(),
                Canned::Json(status, body.into()),
                streamed_text("done"),
            ]);
            let (code, events) = run_agent(&args(&server.url, 5), Path::new("/"));
            assert_eq!(code, 0, "{events:?}");
            let [
                AgentEvent::Compacted {
                    step,
                    reason,
                    dropped_turns,
                    elided,
                    bytes_before,
                    bytes_after,
                },
            ] = events_of(&events, "compacted")[..]
            else {
                panic!("not one compaction in {events:?}");
            };
            assert_eq!(
                (*step, reason.as_str(), *dropped_turns, *elided),
                (2, message, 0, 1)
            );
            assert_eq!(bytes_before - bytes_after, 5012 - 27);
            assert_eq!(
                events.last(),
                Some(&AgentEvent::Final {
                    answer: "done".into(),
                    steps: 2,
                    reason: EndReason::Done
                })
            );
            let requests = server.received();
            assert_eq!(requests.len(), 3);
            assert_eq!(
                last_message(&requests[1])["content"].as_str().map(str::len),
                Some(5012)
            );
            assert_eq!(
                last_message(&requests[2]),
                &serde_json::json!({"role": "tool", "tool_call_id": "c1", "content": "[output elided: 5012 bytes]"})
            );
        }
    }

    #[test]
    fn an_overflow_that_compaction_cannot_cure_ends_without_looping() {
        let server = Server::start(vec![
            big_output_call(),
            Canned::Json(400, OVERFLOW_400.into()),
        ]);
        let (code, events) = run_agent(&args(&server.url, 10), Path::new("/"));
        assert_eq!(code, 3);
        // The tool call, the overflow, after eliding the output, after dropping the turn.
        let requests = server.received();
        assert_eq!(requests.len(), 4);
        let sizes: Vec<usize> = requests
            .iter()
            .map(|request| request["messages"].as_array().map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes, [2, 4, 4, 2]);
        assert_eq!(
            requests[3]["messages"][1]["content"],
            "do the thing\n\n[1 earlier turns of this conversation were dropped to fit the \
             model's context.]"
        );
        let compactions: Vec<(u32, u32)> = events_of(&events, "compacted")
            .into_iter()
            .map(|event| match event {
                AgentEvent::Compacted {
                    dropped_turns,
                    elided,
                    ..
                } => (*dropped_turns, *elided),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(compactions, [(0, 1), (1, 0)]);
        assert_eq!(
            events[events.len() - 2..],
            [
                AgentEvent::Error {
                    message: "the conversation exceeds the model's context and cannot be \
                              compacted further: request (724 tokens) exceeds the available \
                              context size (512 tokens), try increasing it"
                        .into()
                },
                AgentEvent::Final {
                    answer: String::new(),
                    steps: 1,
                    reason: EndReason::ContextFull
                }
            ]
        );
    }

    #[test]
    fn a_server_refusing_tools_gets_them_in_text() {
        let block = "I will write it.\n```tool\n{\"name\": \"write_file\", \"arguments\": \
                     {\"path\": \"notes/a.txt\", \"content\": \"hi\\n\"}}\n```";
        let server = Server::start(vec![
            Canned::Json(
                500,
                r#"{"error":{"code":500,"message":"tools param requires --jinja flag","type":"server_error"}}"#.into(),
            ),
            streamed_text(block),
            streamed_text("done"),
        ]);
        let dir = scratch("text-tools");
        let (code, events) = run_agent(&args(&server.url, 5), &dir);
        assert_eq!(code, 0);
        assert_eq!(
            std::fs::read_to_string(dir.join("notes/a.txt"))
                .ok()
                .as_deref(),
            Some("hi\n")
        );
        assert_eq!(
            events[1..5],
            [
                AgentEvent::TextTools {
                    step: 1,
                    reason: "tools param requires --jinja flag".into()
                },
                AgentEvent::ModelTurn {
                    step: 1,
                    content: Some(block.into()),
                    tool_calls: 1,
                    prompt_tokens: Some(100),
                    completion_tokens: Some(10)
                },
                AgentEvent::ToolCall {
                    step: 1,
                    id: "call_1_0".into(),
                    name: "write_file".into(),
                    arguments: r#"{"content":"hi\n","path":"notes/a.txt"}"#.into()
                },
                AgentEvent::ToolResult {
                    step: 1,
                    id: "call_1_0".into(),
                    exit_code: None,
                    output: "wrote 3 bytes (1 line) to `notes/a.txt`, a new file".into(),
                    truncated: false
                },
            ]
        );
        let requests = server.received();
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[0]["tools"].as_array().map(Vec::len), Some(6));
        assert_eq!(requests[1].get("tools"), None);
        let system = requests[1]["messages"][0]["content"]
            .as_str()
            .unwrap_or_default();
        assert!(
            system.ends_with(&format!(
                "final answer and no tool call.\n\n{}",
                text_tools::instructions(&Toolbox::new(&dir, Duration::from_secs(1)))
            )),
            "{system}"
        );
        let messages = requests[2]["messages"].as_array().expect("messages");
        assert_eq!(
            messages[2],
            serde_json::json!({"role": "assistant", "content": block})
        );
        assert_eq!(
            messages[3],
            serde_json::json!({"role": "user", "content": "Result of `write_file` (call_1_0):\nwrote 3 bytes (1 line) to `notes/a.txt`, a new file"})
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn text_tools_on_request_send_no_tools() {
        let server = Server::start(vec![
            streamed_text("```tool\n{\"name\": \"list_dir\"}\n```\n```tool\nnope\n```"),
            streamed_text("done"),
        ]);
        let dir = scratch("text-flag");
        let mut args = args(&server.url, 5);
        args.text_tools = true;
        let (code, events) = run_agent(&args, &dir);
        assert_eq!(code, 0);
        assert_eq!(events_of(&events, "text_tools"), Vec::<&AgentEvent>::new());
        let requests = server.received();
        assert_eq!(requests[0].get("tools"), None);
        assert!(
            requests[0]["messages"][0]["content"].as_str().is_some_and(
                |system| system.contains("A reply without a tool block is your final answer.")
            )
        );
        assert_eq!(
            last_message(&requests[1])["content"],
            "Result of `list_dir` (call_1_0):\n`.` is empty\n\nResult of `tool` (call_1_1):\n\
             error: a ```tool block must hold one JSON object like {\"name\": \"read_file\", \
             \"arguments\": {\"path\": \"README.md\"}}; this one is not valid JSON (expected \
             ident at line 1 column 2)"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_file_tools_work_through_the_loop() {
        let server = Server::start(vec![
            streamed_call(
                "w",
                "write_file",
                r#"{"path": "src/a.py", "content": "x = 1\ny = 1\n"}"#,
            ),
            streamed_call(
                "e1",
                "edit_file",
                r#"{"path": "src/a.py", "old_text": " = 1", "new_text": " = 2"}"#,
            ),
            streamed_call(
                "e2",
                "edit_file",
                r#"{"path": "src/a.py", "old_text": "y = 1", "new_text": "y = 2"}"#,
            ),
            streamed_call("r", "read_file", r#"{"path": "src/a.py", "start_line": 2}"#),
            streamed_call("s", "search_text", r#"{"pattern": "= 2"}"#),
            streamed_text("changed y"),
        ]);
        let dir = scratch("file-tools");
        let (code, events) = run_agent(&args(&server.url, 10), &dir);
        assert_eq!(code, 0);
        let outputs: Vec<&str> = events_of(&events, "tool_result")
            .into_iter()
            .map(|event| match event {
                AgentEvent::ToolResult { output, .. } => output.as_str(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            outputs,
            [
                "wrote 12 bytes (2 lines) to `src/a.py`, a new file",
                "error: `old_text` was found 2 times in `src/a.py`; include more of the \
                 surrounding lines so that it matches exactly once",
                "edited `src/a.py` at line 2: 1 line replaced by 1",
                "src/a.py: lines 2-2 of 2\n2\ty = 2",
                "src/a.py:2:y = 2\n[1 match in 1 file]",
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("src/a.py"))
                .ok()
                .as_deref(),
            Some("x = 1\ny = 2\n")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_script_with_arguments_split_across_chunks_and_an_overflow() {
        let server = Server::replaying(
            "{\"content\": \"Writing.\", \"tool_calls\": [{\"id\": \"w\", \"name\": \"write_file\", \"arguments\": {\"path\": \"a.txt\", \"content\": \"fixed\\n\"}}], \"chunks\": 7}\n\
             {\"overflow\": 400}\n\
             {\"content\": \"Done.\", \"chunks\": 3}\n",
        );
        let dir = scratch("replayed");
        let (code, events) = run_agent(&args(&server.url, 5), &dir);
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
        assert_eq!(events_of(&events, "compacted").len(), 1);
        assert_eq!(server.received().len(), 3);
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

    /// `args` with the check `grep -qx fixed a.txt` and `retries`.
    fn checked(url: &str, max_steps: u32, retries: u32) -> AgentArgs {
        AgentArgs {
            check: Some("grep -qx fixed a.txt".into()),
            check_retries: retries,
            ..args(url, max_steps)
        }
    }

    /// A `check` event whose output was not shortened.
    fn check_event(round: u32, step: u32, exit_code: i32, output: &str) -> AgentEvent {
        AgentEvent::Check {
            round,
            step,
            exit_code: Some(exit_code),
            output: output.into(),
            truncated: false,
        }
    }

    const WRITE_FIXED: &str = "{\"tool_calls\": [{\"id\": \"w\", \"name\": \"write_file\", \"arguments\": {\"path\": \"a.txt\", \"content\": \"fixed\\n\"}}]}\n";

    /// What the model reads when `grep -qx fixed a.txt` failed with `left` to go.
    fn failed_check(left: &str) -> String {
        format!(
            "The task is not done yet: its check `grep -qx fixed a.txt` failed.\nexit code \
             1\n(no output)\n\nFix what the check reports, then reply with a short final \
             answer again. You have {left}; the check runs again after your answer."
        )
    }

    #[test]
    fn a_failing_check_goes_back_to_the_model_for_another_round() {
        let server = Server::replaying(&format!(
            "{{\"content\": \"Nothing to do.\"}}\n{WRITE_FIXED}{{\"content\": \"Fixed it.\"}}\n"
        ));
        let dir = scratch("check-retry");
        std::fs::write(dir.join("a.txt"), "broken\n").expect("write");
        let (code, events) = run_agent(&checked(&server.url, 5, 1), &dir);
        assert_eq!(code, 0, "{events:?}");
        // With one retry, the agent checks after the first round only: the host's check
        // follows the last.
        assert_eq!(
            events_of(&events, "check"),
            [&check_event(1, 1, 1, "exit code 1\n(no output)")]
        );
        assert_eq!(
            events.last(),
            Some(&AgentEvent::Final {
                answer: "Fixed it.".into(),
                steps: 3,
                reason: EndReason::Done
            })
        );
        let requests = server.received();
        assert_eq!(requests.len(), 3);
        let messages = requests[1]["messages"].as_array().expect("messages");
        assert_eq!(
            messages[2..],
            [
                serde_json::json!({"role": "assistant", "content": "Nothing to do."}),
                serde_json::json!({"role": "user", "content": failed_check("1 more round")}),
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("a.txt")).ok().as_deref(),
            Some("fixed\n")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_check_that_passes_ends_the_rounds() {
        let server = Server::replaying(&format!(
            "{{\"content\": \"Nothing to do.\"}}\n{WRITE_FIXED}{{\"content\": \"Fixed it.\"}}\n{{\"content\": \"never asked\"}}\n"
        ));
        let dir = scratch("check-pass");
        let (code, events) = run_agent(&checked(&server.url, 10, 3), &dir);
        assert_eq!(code, 0, "{events:?}");
        assert_eq!(
            events_of(&events, "check"),
            [
                &check_event(
                    1,
                    1,
                    2,
                    "exit code 2\ngrep: a.txt: No such file or directory"
                ),
                &check_event(2, 3, 0, "exit code 0\n(no output)")
            ]
        );
        assert_eq!(server.received().len(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rounds_stop_when_the_steps_run_out() {
        let server =
            Server::replaying("{\"content\": \"Done.\"}\n{\"content\": \"Done again.\"}\n");
        let dir = scratch("check-budget");
        std::fs::write(dir.join("a.txt"), "broken\n").expect("write");
        let (code, events) = run_agent(&checked(&server.url, 2, 5), &dir);
        assert_eq!(code, 2);
        assert_eq!(
            events_of(&events, "check"),
            [
                &check_event(1, 1, 1, "exit code 1\n(no output)"),
                &check_event(2, 2, 1, "exit code 1\n(no output)")
            ]
        );
        assert_eq!(
            events.last(),
            Some(&AgentEvent::Final {
                answer: "Done again.".into(),
                steps: 2,
                reason: EndReason::BudgetSpent
            })
        );
        let requests = server.received();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            last_message(&requests[1])["content"],
            failed_check("5 more rounds").as_str()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn without_retries_the_agent_never_runs_the_check() {
        let server = Server::replaying("{\"content\": \"Done.\"}\n");
        let dir = scratch("check-none");
        let (code, events) = run_agent(&checked(&server.url, 3, 0), &dir);
        assert_eq!(code, 0);
        assert_eq!(events_of(&events, "check"), Vec::<&AgentEvent>::new());
        assert_eq!(server.received().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn mcp_tools_are_offered_called_and_their_servers_stopped_before_the_end() {
        let server = Server::replaying(
            "{\"tool_calls\": [{\"id\": \"m1\", \"name\": \"loud__shout\", \"arguments\": {\"text\": \"hi\"}}, {\"id\": \"m2\", \"name\": \"loud__fail\"}]}\n\
             {\"content\": \"Shouted.\"}\n",
        );
        let dir = scratch("mcp");
        let mut args = args(&server.url, 5);
        args.mcp = vec![McpSpec {
            command: format!(
                "exec bash {}/tests/mcp/shout.sh",
                env!("CARGO_MANIFEST_DIR")
            ),
            name: "loud".into(),
        }];
        let (code, events) = run_agent(&args, &dir);
        assert_eq!(code, 0, "{events:?}");
        assert_eq!(
            events[1],
            AgentEvent::McpServer {
                server: "loud".into(),
                tools: vec!["loud__shout".into(), "loud__fail".into()],
                error: None
            }
        );
        let requests = server.received();
        let names: Vec<&str> = requests[0]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|tool| tool["function"]["name"].as_str())
            .collect();
        assert_eq!(names[6..], ["loud__shout", "loud__fail"]);
        let messages = requests[1]["messages"].as_array().expect("messages");
        assert_eq!(
            messages[3..],
            [
                serde_json::json!({"role": "tool", "tool_call_id": "m1", "content": "HI!"}),
                serde_json::json!({"role": "tool", "tool_call_id": "m2", "content": "error: the fail tool always fails"}),
            ]
        );
        // The server's log, in the working directory: stopped before the agent ended.
        let log = std::fs::read_to_string(dir.join("mcp.log")).expect("log");
        let kinds: Vec<&str> = log.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(kinds, ["started", "call", "call", "stopped"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_scripted_reply_cut_off_is_a_lost_connection() {
        let server =
            Server::replaying("{\"content\": \"abcdef\", \"chunks\": 3, \"end\": \"cut\"}");
        let (code, events) = run_agent(&args(&server.url, 3), Path::new("/"));
        assert_eq!(code, 3);
        assert!(
            matches!(&events[..], [_, AgentEvent::Error { message }, AgentEvent::Final { reason: EndReason::ModelUnreachable, .. }] if message.contains("the reply broke off")),
            "{events:?}"
        );
    }
}
