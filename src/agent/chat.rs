//! The client for the model server's OpenAI-compatible chat API (llama.cpp's
//! `llama-server`).
//!
//! In go the conversation so far and the tool declarations; out comes a [`Reply`] with
//! the model's text, its tool calls and the token counts, or a [`ChatError`] that says
//! what went wrong: the server could not be reached, took too long (and which of the
//! three [`Timeouts`] fired), said the conversation exceeds its context, refused native
//! tool calls, or answered badly.
//!
//! Requests are plain HTTP and ask for a streamed reply (server-sent events, `data: …`
//! lines, ending with `data: [DONE]` or with the end of the body); a server that answers
//! with one whole JSON body instead is read as such, and one that refuses to stream
//! with tools is asked again without streaming. The exchange runs on a thread of its
//! own that hands over the body line by line, so that this side can keep a separate
//! clock for the first token and for silences between chunks, which `ureq` cannot.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::EndReason;
use super::message::Message;
use super::reply::{Reply, ReplyBuilder, excerpt, parse_reply};

/// Sends chat completion requests to one model server.
#[derive(Debug)]
pub struct ChatClient {
    agent: ureq::Agent,
    /// The full `…/v1/chat/completions` URL.
    endpoint: String,
    /// Most tokens one reply may have: a model that never emits its stop token must
    /// still hand back control.
    max_tokens: u32,
    /// The `model` field of every request.
    model: String,
    /// Whether to ask for a streamed reply; off for good once the server refused to
    /// stream a reply with tools.
    stream: bool,
    /// When the task's own time runs out (no exchange waits past it), and how long that
    /// time was.
    task_deadline: Option<Instant>,
    task_time: Duration,
    timeouts: Timeouts,
}

/// How long to wait for each part of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the server to accept the connection (and for its name to resolve).
    pub connect: Duration,
    /// From sending the request to the first part of the answer: the server reads the
    /// whole prompt first, which on a CPU can take minutes.
    pub first_token: Duration,
    /// Between two parts of a streamed answer, once it has started.
    pub idle: Duration,
}

/// Which of the [`Timeouts`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Connect,
    FirstToken,
    Idle,
    /// The task's wall-clock budget, not the server: it ran out during the exchange.
    Task,
}

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The server answered with a body that is not a chat completion.
    #[error("model server at {endpoint} sent an unreadable reply: {reason}")]
    BadReply { endpoint: String, reason: String },
    /// The server said the conversation does not fit its context.
    #[error(
        "model server at {endpoint} answered {status}: the conversation exceeds the context: {message}"
    )]
    ContextExceeded {
        endpoint: String,
        message: String,
        status: u16,
    },
    /// The server answered with a non-2xx status.
    #[error("model server at {endpoint} answered {status}: {body}")]
    Status {
        body: String,
        endpoint: String,
        status: u16,
    },
    /// The server took longer than one of the [`Timeouts`].
    #[error("model server at {endpoint}: {timeout} ({after:?})")]
    TimedOut {
        after: Duration,
        endpoint: String,
        timeout: Timeout,
    },
    /// The server does not take the `tools` field (llama-server without `--jinja`).
    #[error(
        "model server at {endpoint} answered {status}: it refuses native tool calls: {message}"
    )]
    ToolsRejected {
        endpoint: String,
        message: String,
        status: u16,
    },
    /// No answer at all: refused, unresolvable, reset.
    #[error("could not reach the model server at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
}

#[derive(Serialize)]
struct Request<'a> {
    max_tokens: u32,
    messages: &'a [Message],
    model: &'a str,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Value>,
    /// Left out when empty: some servers reject an empty list.
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    tools: &'a [Value],
}

/// What the exchange thread hands over, in this order: a head (or a failure), then
/// lines, then the end (or a loss).
enum Piece {
    End,
    Failed(ureq::Error),
    Head(u16),
    Line(String),
    Lost(String),
}

/// Longest server error body quoted in a [`ChatError`].
const ERROR_BODY_LIMIT: usize = 2000;

/// Most bytes one reply may have; a server that sends more is broken.
const BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// An HTTP client for servers on the private network: no proxy (one inherited from the
/// image's environment would only send requests somewhere they cannot go), and error
/// statuses as answers, whose bodies carry the server's explanation.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .new_agent()
}

impl ChatClient {
    /// A client for `model_url` (e.g. `http://coder:8080`).
    #[must_use]
    pub fn new(model_url: &str, model: &str, max_tokens: u32, timeouts: Timeouts) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_resolve(Some(timeouts.connect))
            .timeout_connect(Some(timeouts.connect))
            // Only a backstop, so that an abandoned exchange thread ends some day; the
            // clocks that matter run in `read`.
            .timeout_per_read(Some(
                timeouts.first_token.max(timeouts.idle) + timeouts.connect,
            ))
            .build()
            .new_agent();
        Self {
            agent,
            endpoint: format!("{}/v1/chat/completions", model_url.trim_end_matches('/')),
            max_tokens,
            model: model.to_owned(),
            stream: true,
            task_deadline: None,
            task_time: Duration::ZERO,
            timeouts,
        }
    }

    /// No exchange waits past `deadline`, the end of the task's time, `time` long.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<(Instant, Duration)>) -> Self {
        self.task_deadline = deadline.map(|(at, _)| at);
        self.task_time = deadline.map_or(Duration::ZERO, |(_, time)| time);
        self
    }

    /// Sends the conversation and returns the first choice of the reply. With no
    /// `tools`, the request has no `tools` field.
    pub fn complete(&mut self, messages: &[Message], tools: &[Value]) -> Result<Reply, ChatError> {
        match self.exchange(messages, tools) {
            // Older llama-servers say "Cannot use tools with stream".
            Err(error) if self.stream && !tools.is_empty() && error.refuses_streaming() => {
                self.stream = false;
                self.exchange(messages, tools)
            }
            result => result,
        }
    }

    /// One request and its reply.
    fn exchange(&self, messages: &[Message], tools: &[Value]) -> Result<Reply, ChatError> {
        let request = Request {
            max_tokens: self.max_tokens,
            messages,
            model: &self.model,
            stream: self.stream,
            stream_options: self
                .stream
                .then(|| serde_json::json!({ "include_usage": true })),
            tools,
        };
        let body = serde_json::to_vec(&request).map_err(|error| ChatError::BadReply {
            endpoint: self.endpoint.clone(),
            reason: format!("could not encode the request: {error}"),
        })?;
        let started = Instant::now();
        let pieces = self.start(body);
        self.read(&pieces, started)
    }

    /// Starts the exchange on its own thread; the thread ends when the body does, when
    /// the receiver is gone, or at the backstop timeout.
    fn start(&self, body: Vec<u8>) -> mpsc::Receiver<Piece> {
        let (pieces, receiver) = mpsc::channel();
        let agent = self.agent.clone();
        let endpoint = self.endpoint.clone();
        thread::spawn(move || {
            let response = agent
                .post(&endpoint)
                .header("Content-Type", "application/json")
                .header("Accept", "text/event-stream, application/json")
                .send(&body[..]);
            let response = match response {
                Ok(response) => response,
                Err(error) => {
                    let _ = pieces.send(Piece::Failed(error));
                    return;
                }
            };
            if pieces
                .send(Piece::Head(response.status().as_u16()))
                .is_err()
            {
                return;
            }
            let reader = response
                .into_body()
                .into_with_config()
                .limit(BODY_LIMIT)
                .reader();
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            loop {
                line.clear();
                let piece = match reader.read_until(b'\n', &mut line) {
                    Ok(0) => Piece::End,
                    Ok(_) => Piece::Line(String::from_utf8_lossy(&line).into_owned()),
                    Err(error) => Piece::Lost(error.to_string()),
                };
                let last = !matches!(piece, Piece::Line(_));
                if pieces.send(piece).is_err() || last {
                    return;
                }
            }
        });
        receiver
    }

    /// Reads the exchange's pieces into a reply, keeping the clocks: until the first
    /// part of the answer, the first-token deadline (counted from `started`, plus the
    /// connect allowance); after it, the idle timeout between pieces.
    fn read(&self, pieces: &mpsc::Receiver<Piece>, started: Instant) -> Result<Reply, ChatError> {
        let first_token_deadline = started + self.timeouts.connect + self.timeouts.first_token;
        let mut clock = Clock {
            deadline: first_token_deadline,
            timeout: Timeout::FirstToken,
        };
        let status = match self.next(pieces, &clock)? {
            Piece::Head(status) => status,
            Piece::Failed(error) => return Err(self.transport_error(&error)),
            Piece::End | Piece::Line(_) | Piece::Lost(_) => {
                return Err(self.unreachable("the exchange ended before a reply"));
            }
        };
        let mut body = Body::default();
        loop {
            let line = match self.next(pieces, &clock)? {
                Piece::Line(line) => line,
                Piece::Lost(reason) if (200..300).contains(&status) => {
                    return Err(self.unreachable(&format!("the reply broke off: {reason}")));
                }
                // An error body cut short still says what it says.
                Piece::End | Piece::Lost(_) => break,
                Piece::Head(_) | Piece::Failed(_) => continue,
            };
            let answered = if (200..300).contains(&status) {
                match body.push(&line) {
                    // A server that streams past the token budget is cut off there, as
                    // it should have stopped itself: the reply is what came so far.
                    Ok(Flow::Answered)
                        if body.parts >= self.max_tokens.saturating_add(PART_SLACK) =>
                    {
                        break;
                    }
                    Ok(Flow::Answered) => true,
                    Ok(Flow::Waiting) => false,
                    Ok(Flow::Done) => break,
                    Err((status, error)) => return Err(self.status_error(status, &error)),
                }
            } else {
                body.whole.push_str(&line);
                true
            };
            if answered {
                clock = Clock {
                    deadline: Instant::now() + self.timeouts.idle,
                    timeout: Timeout::Idle,
                };
            }
        }
        if !(200..300).contains(&status) {
            return Err(self.status_error(status, &body.whole));
        }
        body.finish().map_err(|reason| ChatError::BadReply {
            endpoint: self.endpoint.clone(),
            reason,
        })
    }

    /// The next piece, or the error of the clock that ran out first.
    fn next(&self, pieces: &mpsc::Receiver<Piece>, clock: &Clock) -> Result<Piece, ChatError> {
        let (deadline, timeout) = match self.task_deadline {
            Some(task) if task < clock.deadline => (task, Timeout::Task),
            _ => (clock.deadline, clock.timeout),
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        pieces.recv_timeout(wait).map_err(|error| match error {
            RecvTimeoutError::Timeout => self.timed_out(timeout),
            RecvTimeoutError::Disconnected => self.unreachable("the exchange thread stopped"),
        })
    }

    /// Sorts a ureq error: a slow connect is a timeout, trouble on the way is
    /// "unreachable", anything the server said that HTTP cannot make sense of is a bad
    /// reply.
    fn transport_error(&self, error: &ureq::Error) -> ChatError {
        match error {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                self.timed_out(Timeout::Connect)
            }
            ureq::Error::Timeout(_) => self.timed_out(Timeout::FirstToken),
            ureq::Error::Io(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::BadUri(_) => self.unreachable(&error.to_string()),
            _ => ChatError::BadReply {
                endpoint: self.endpoint.clone(),
                reason: error.to_string(),
            },
        }
    }

    fn timed_out(&self, timeout: Timeout) -> ChatError {
        let after = match timeout {
            Timeout::Connect => self.timeouts.connect,
            Timeout::FirstToken => self.timeouts.first_token,
            Timeout::Idle => self.timeouts.idle,
            Timeout::Task => self.task_time,
        };
        ChatError::TimedOut {
            after,
            endpoint: self.endpoint.clone(),
            timeout,
        }
    }

    fn unreachable(&self, reason: &str) -> ChatError {
        ChatError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: reason.to_owned(),
        }
    }

    /// Sorts an error answer by what it says: llama-server reports an overlong
    /// conversation as a 400 of type `exceed_context_size_error` ("request (724 tokens)
    /// exceeds the available context size (512 tokens)") or, in older versions and
    /// during generation, as a 500 saying the context size was exceeded; without
    /// `--jinja` it answers "tools param requires --jinja flag".
    fn status_error(&self, status: u16, body: &str) -> ChatError {
        let endpoint = self.endpoint.clone();
        let lower = body.to_lowercase();
        let message = server_message(body);
        if lower.contains("context") && lower.contains("exceed") {
            return ChatError::ContextExceeded {
                endpoint,
                message,
                status,
            };
        }
        let refuses_tools = lower.contains("tool")
            && !lower.contains("stream")
            && ["jinja", "support", "require", "unknown", "unrecognized"]
                .iter()
                .any(|word| lower.contains(word));
        if refuses_tools {
            return ChatError::ToolsRejected {
                endpoint,
                message,
                status,
            };
        }
        ChatError::Status {
            body: excerpt(body, ERROR_BODY_LIMIT),
            endpoint,
            status,
        }
    }
}

/// Answer-carrying events a streamed reply may have beyond `max_tokens` before it is
/// cut off: a server may send its last token and its finish in separate events.
const PART_SLACK: u32 = 8;

/// The deadline being watched and which timeout it stands for.
struct Clock {
    deadline: Instant,
    timeout: Timeout,
}

/// A 2xx body as it arrives: server-sent events, or one whole JSON answer, decided by
/// its first non-blank line.
#[derive(Default)]
struct Body {
    builder: ReplyBuilder,
    /// `None` until the first non-blank line.
    events: Option<bool>,
    /// Event data that is not yet a whole JSON value: the SSE spec joins consecutive
    /// `data:` lines, though llama-server sends each chunk on one line.
    pending: String,
    /// Whether any event carried data.
    saw_data: bool,
    /// Events that carried part of the answer: a streaming server sends one token each.
    parts: u32,
    /// The first event data that was not JSON, to explain an empty reply.
    unreadable: Option<String>,
    /// The whole body, when it is not events.
    whole: String,
}

/// What one line of a body meant for the reply.
enum Flow {
    /// It carried part of the answer.
    Answered,
    /// The stream says it is complete.
    Done,
    /// Nothing of the answer yet (a blank line, a comment, a role announcement).
    Waiting,
}

/// The fields an event stream's lines start with.
const EVENT_FIELDS: [&str; 6] = ["data:", "event:", "id:", "retry:", ":", "error:"];

impl Body {
    /// Takes one line; an error event comes back as a status and the server's words.
    fn push(&mut self, line: &str) -> Result<Flow, (u16, String)> {
        let line = line.trim_end_matches(['\r', '\n']);
        let events = match self.events {
            Some(events) => events,
            None if line.trim().is_empty() => return Ok(Flow::Waiting),
            None => {
                let start = line.trim_start();
                let events = EVENT_FIELDS.iter().any(|field| start.starts_with(field));
                self.events = Some(events);
                events
            }
        };
        if !events {
            self.whole.push_str(line);
            self.whole.push('\n');
            return Ok(Flow::Answered);
        }
        let (field, data) = line.split_once(':').unwrap_or((line, ""));
        let data = data.strip_prefix(' ').unwrap_or(data);
        match field {
            "data" if data.trim() == "[DONE]" => Ok(Flow::Done),
            "data" => {
                self.saw_data = true;
                if !self.pending.is_empty() {
                    self.pending.push('\n');
                }
                self.pending.push_str(data);
                let Ok(chunk) = serde_json::from_str::<Value>(&self.pending) else {
                    return Ok(Flow::Waiting);
                };
                let data = std::mem::take(&mut self.pending);
                if let Some(error) = chunk.get("error") {
                    let status = error
                        .get("code")
                        .and_then(Value::as_u64)
                        .and_then(|code| u16::try_from(code).ok())
                        .unwrap_or(500);
                    return Err((status, data));
                }
                Ok(if self.builder.push(&chunk) {
                    self.parts = self.parts.saturating_add(1);
                    Flow::Answered
                } else {
                    Flow::Waiting
                })
            }
            // Some llama-server versions report a failure mid-stream as `error: {…}`.
            "error" => Err((500, data.to_owned())),
            // A blank line ends an event: what it left unparsed is not JSON.
            "" if line.is_empty() => {
                if !self.pending.is_empty() && self.unreadable.is_none() {
                    self.unreadable = Some(excerpt(&self.pending, ERROR_BODY_LIMIT));
                }
                self.pending.clear();
                Ok(Flow::Waiting)
            }
            _ => Ok(Flow::Waiting),
        }
    }

    fn finish(self) -> Result<Reply, String> {
        match self.events {
            Some(true) if self.builder.is_empty() && self.unreadable.is_some() => Err(format!(
                "an event is not JSON: {}",
                self.unreadable.unwrap_or_default()
            )),
            Some(true) if self.saw_data => Ok(self.builder.finish()),
            Some(false) => parse_reply(&self.whole),
            _ => Err("the reply was empty".to_owned()),
        }
    }
}

impl ChatError {
    /// How a run that stops on this error ends.
    #[must_use]
    pub fn end_reason(&self) -> EndReason {
        match self {
            Self::Unreachable { .. } => EndReason::ModelUnreachable,
            Self::TimedOut {
                timeout: Timeout::Task,
                ..
            } => EndReason::TimeSpent,
            Self::TimedOut { .. } => EndReason::ModelTimeout,
            Self::ContextExceeded { .. } => EndReason::ContextFull,
            Self::BadReply { .. } | Self::Status { .. } | Self::ToolsRejected { .. } => {
                EndReason::ModelError
            }
        }
    }

    /// Whether the server refused to stream a reply with tools.
    fn refuses_streaming(&self) -> bool {
        let Self::Status { body, .. } = self else {
            return false;
        };
        let lower = body.to_lowercase();
        lower.contains("stream") && lower.contains("tool")
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect timeout: it did not accept the connection in time",
            Self::FirstToken => {
                "first-token timeout: no answer began in time (reading a long prompt on a \
                 CPU can take minutes; see --first-token-timeout)"
            }
            Self::Idle => "idle timeout: the streamed answer stalled between two chunks",
            Self::Task => "the task's time ran out while waiting for the answer",
        })
    }
}

/// The server's own words out of an error body: `error.message` when it is JSON, the
/// body itself otherwise.
fn server_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body).ok().and_then(|value| {
        let error = value.get("error")?;
        error
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
            .map(str::to_owned)
    });
    excerpt(message.as_deref().unwrap_or(body), ERROR_BODY_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::message::ToolCall;
    use crate::agent::reply::Usage;
    use crate::agent::test_server::{
        Canned, STREAM_HEAD, Server, chunk, delta, event, streamed_text,
    };
    use serde_json::json;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn timeouts(connect_ms: u64, first_token_ms: u64, idle_ms: u64) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(connect_ms),
            first_token: Duration::from_millis(first_token_ms),
            idle: Duration::from_millis(idle_ms),
        }
    }

    fn client(url: &str, timeouts: Timeouts) -> ChatClient {
        ChatClient::new(url, "m", 32, timeouts)
    }

    fn conversation() -> Vec<Message> {
        vec![Message::user("hi")]
    }

    fn tools() -> Vec<Value> {
        vec![json!({"type": "function", "function": {"name": "shell"}})]
    }

    /// One exchange with a client of ordinary timeouts.
    fn ask(server: &Server) -> Result<Reply, ChatError> {
        client(&server.url, timeouts(2000, 2000, 2000)).complete(&conversation(), &tools())
    }

    fn tool_fragment(index: u64, id: Option<&str>, name: Option<&str>, arguments: &str) -> String {
        let mut fragment = json!({"index": index, "function": {"arguments": arguments}});
        if let Some(id) = id {
            fragment["id"] = json!(id);
            fragment["type"] = json!("function");
        }
        if let Some(name) = name {
            fragment["function"]["name"] = json!(name);
        }
        event(&delta(&json!({ "tool_calls": [fragment] })))
    }

    #[test]
    fn assembles_interleaved_tool_calls_from_fragments() {
        let split = tool_fragment(0, None, None, "th\": \"a.");
        let (head, tail) = split.split_at(20);
        let server = Server::start(vec![Canned::Stream(vec![
            event(&delta(&json!({"role": "assistant", "content": null}))),
            // The first fragment carries the name and the start of the arguments.
            tool_fragment(0, Some("a"), Some("read_file"), "{\"pa"),
            tool_fragment(1, Some("b"), Some("shell"), ""),
            // One event split over two HTTP chunks.
            head.to_owned(),
            tail.to_owned(),
            tool_fragment(1, None, None, "{\"command\":"),
            tool_fragment(1, None, None, " \"ls\"}"),
            tool_fragment(0, None, None, "txt\"}"),
            event(&json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})),
            event(&json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9}})),
            "data: [DONE]\n\n".to_owned(),
        ])]);
        let reply = ask(&server).expect("a reply");
        assert_eq!(
            reply,
            Reply {
                content: None,
                tool_calls: vec![
                    ToolCall::new("a", "read_file", r#"{"path": "a.txt"}"#),
                    ToolCall::new("b", "shell", r#"{"command": "ls"}"#),
                ],
                usage: Usage {
                    completion_tokens: Some(9),
                    prompt_tokens: Some(12)
                }
            }
        );
        let requests = server.received();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0]["stream"], true);
        assert_eq!(requests[0]["max_tokens"], 32);
        assert_eq!(requests[0]["tools"], json!(tools()));
    }

    #[test]
    fn text_without_done_ends_with_the_stream() {
        let server = Server::start(vec![Canned::Stream(vec![
            ": keep-alive\n\n".to_owned(),
            event(&delta(&json!({"role": "assistant", "content": null}))),
            event(&delta(&json!({"content": "Hel"}))),
            "event: message\n".to_owned(),
            event(&delta(&json!({"content": null}))),
            event(&delta(&json!({"content": "lo"}))),
            // Stats as llama.cpp reports them, when there is no `usage`.
            event(
                &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "timings": {"cache_n": 20, "prompt_n": 5, "predicted_n": 4}}),
            ),
        ])]);
        let reply = ask(&server).expect("a reply");
        assert_eq!(reply.content.as_deref(), Some("Hello"));
        assert_eq!(reply.tool_calls, vec![]);
        assert_eq!(
            reply.usage,
            Usage {
                completion_tokens: Some(4),
                prompt_tokens: Some(25)
            }
        );
    }

    #[test]
    fn data_spread_over_lines_is_joined() {
        let server = Server::start(vec![Canned::Stream(vec![
            "data: {\"choices\": [{\"delta\":\ndata: {\"content\": \"joined\"}}]}\n\n".to_owned(),
            "data: [DONE]\n\n".to_owned(),
        ])]);
        assert_eq!(
            ask(&server).expect("a reply").content.as_deref(),
            Some("joined")
        );
    }

    #[test]
    fn a_whole_json_reply_is_read_as_such() {
        let body = json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":\"ls\"}"}},
            {"type": "function", "function": {"name": "shell", "arguments": {"command": "pwd"}}}
        ]}}], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        let server = Server::start(vec![Canned::Json(200, format!("\n{body:#}\n"))]);
        assert_eq!(
            ask(&server).expect("a reply"),
            Reply {
                content: None,
                tool_calls: vec![
                    ToolCall::new("x", "shell", r#"{"command":"ls"}"#),
                    ToolCall::new("", "shell", r#"{"command":"pwd"}"#),
                ],
                usage: Usage {
                    completion_tokens: Some(5),
                    prompt_tokens: Some(10)
                }
            }
        );
    }

    #[test]
    fn empty_and_unreadable_replies_are_bad_replies() {
        let server = Server::start(vec![
            Canned::Stream(Vec::new()),
            Canned::Json(200, r#"{"choices":[]}"#.into()),
            Canned::Stream(vec!["data: hello\n\n".to_owned()]),
        ]);
        let endpoint = format!("{}/v1/chat/completions", server.url);
        let reasons: Vec<String> = (0..3)
            .map(|_| match ask(&server) {
                Err(ChatError::BadReply {
                    endpoint: at,
                    reason,
                }) if at == endpoint => reason,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "the reply was empty",
                r#"no choices: {"choices":[]}"#,
                "an event is not JSON: hello"
            ]
        );
    }

    #[test]
    fn a_stream_cut_off_is_a_lost_connection() {
        let server = Server::start(vec![Canned::Cut(vec![event(&delta(
            &json!({"content": "Hel"}),
        ))])]);
        match ask(&server) {
            Err(ChatError::Unreachable { reason, .. }) => {
                assert!(reason.starts_with("the reply broke off: "), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A port whose listener takes no more connections: its accept queue is full, so
    /// the kernel drops further SYNs and a connect hangs.
    fn full_listener() -> (TcpListener, Vec<TcpStream>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // SAFETY: listen(2) on a socket this test owns; it only changes the backlog.
        unsafe { libc::listen(listener.as_raw_fd(), 0) };
        let address = listener.local_addr().expect("address");
        let mut held = Vec::new();
        while held.len() < 16 {
            match TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
                Ok(stream) => held.push(stream),
                Err(_) => break,
            }
        }
        (listener, held, format!("http://{address}"))
    }

    #[test]
    fn a_connect_timeout_says_so() {
        let (_listener, _held, url) = full_listener();
        let started = Instant::now();
        let error = client(&url, timeouts(300, 5000, 5000))
            .complete(&conversation(), &tools())
            .expect_err("no connection");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            error.to_string(),
            format!(
                "model server at {url}/v1/chat/completions: connect timeout: it did not \
                 accept the connection in time (300ms)"
            )
        );
        assert_eq!(error.end_reason(), EndReason::ModelTimeout);
    }

    #[test]
    fn a_first_token_timeout_says_so_even_after_a_role_chunk() {
        let role = chunk(&event(&delta(
            &json!({"role": "assistant", "content": null}),
        )));
        let server = Server::start(vec![
            Canned::Silent,
            Canned::Script(vec![(0, STREAM_HEAD.to_owned()), (0, role)]),
        ]);
        for _ in 0..2 {
            let started = Instant::now();
            let error = client(&server.url, timeouts(100, 300, 5000))
                .complete(&conversation(), &tools())
                .expect_err("no first token");
            let elapsed = started.elapsed();
            assert!(
                elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
                "{elapsed:?}"
            );
            assert_eq!(
                error.to_string(),
                format!(
                    "model server at {}/v1/chat/completions: first-token timeout: no answer \
                     began in time (reading a long prompt on a CPU can take minutes; see \
                     --first-token-timeout) (300ms)",
                    server.url
                )
            );
        }
    }

    #[test]
    fn a_stream_past_the_token_budget_is_cut_off_there() {
        // 60 tokens for a budget of 32, and then the stream stalls, never to end: the
        // reply is what came until the budget and its slack, not an idle timeout.
        let piece = chunk(&event(&delta(&json!({ "content": "x" }))));
        let mut script = vec![(0, STREAM_HEAD.to_owned())];
        script.extend(std::iter::repeat_n((0, piece), 60));
        let server = Server::start(vec![Canned::Script(script)]);
        let reply = client(&server.url, timeouts(2000, 2000, 1000))
            .complete(&conversation(), &tools())
            .expect("a reply cut at the budget");
        assert_eq!(reply.content.as_deref(), Some("x".repeat(32 + 8).as_str()));
        assert_eq!(reply.tool_calls, vec![]);
    }

    #[test]
    fn an_idle_timeout_says_so_and_steady_chunks_keep_it_away() {
        let piece = |text: &str| chunk(&event(&delta(&json!({ "content": text }))));
        let server = Server::start(vec![
            Canned::Script(vec![(0, STREAM_HEAD.to_owned()), (0, piece("Hel"))]),
            Canned::Script(vec![
                (0, STREAM_HEAD.to_owned()),
                (0, piece("a")),
                (250, piece("b")),
                (250, piece("c")),
                (250, piece("d")),
                (0, chunk("data: [DONE]\n\n")),
            ]),
        ]);
        let mut client = client(&server.url, timeouts(100, 5000, 800));
        let started = Instant::now();
        let error = client
            .complete(&conversation(), &tools())
            .expect_err("stalled");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            error.to_string(),
            format!(
                "model server at {}/v1/chat/completions: idle timeout: the streamed answer \
                 stalled between two chunks (800ms)",
                server.url
            )
        );
        // 750 ms in all, near the idle timeout, but never 800 ms without a chunk.
        let reply = client
            .complete(&conversation(), &tools())
            .expect("a steady stream");
        assert_eq!(reply.content.as_deref(), Some("abcd"));
    }

    fn context_error(error: Result<Reply, ChatError>) -> (u16, String) {
        match error {
            Err(ChatError::ContextExceeded {
                status, message, ..
            }) => (status, message),
            other => panic!("not a context error: {other:?}"),
        }
    }

    #[test]
    fn both_forms_of_context_overflow_are_recognised() {
        let server = Server::start(vec![
            Canned::Json(
                400,
                r#"{"error":{"code":400,"message":"request (724 tokens) exceeds the available context size (512 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":724,"n_ctx":512}}"#.into(),
            ),
            Canned::Json(
                500,
                r#"{"error":{"code":500,"message":"the request exceeds the available context size. try increasing the context size or enable context shift","type":"server_error"}}"#.into(),
            ),
            Canned::Stream(vec![
                event(&delta(&json!({"content": "partial"}))),
                "data: {\"error\":{\"code\":500,\"message\":\"Context size has been exceeded.\",\"type\":\"server_error\"}}\n\n".to_owned(),
            ]),
        ]);
        assert_eq!(
            context_error(ask(&server)),
            (
                400,
                "request (724 tokens) exceeds the available context size (512 tokens), try \
                 increasing it"
                    .to_owned()
            )
        );
        assert_eq!(
            context_error(ask(&server)),
            (
                500,
                "the request exceeds the available context size. try increasing the context \
                 size or enable context shift"
                    .to_owned()
            )
        );
        assert_eq!(
            context_error(ask(&server)),
            (500, "Context size has been exceeded.".to_owned())
        );
    }

    #[test]
    fn a_refusal_of_tools_is_recognised_and_other_errors_stay_statuses() {
        let server = Server::start(vec![
            Canned::Json(
                500,
                r#"{"error":{"code":500,"message":"tools param requires --jinja flag","type":"server_error"}}"#.into(),
            ),
            Canned::Json(400, r#"{"error":{"code":400,"message":"invalid tool call arguments"}}"#.into()),
        ]);
        match ask(&server) {
            Err(ChatError::ToolsRejected {
                status, message, ..
            }) => assert_eq!(
                (status, message.as_str()),
                (500, "tools param requires --jinja flag")
            ),
            other => panic!("unexpected {other:?}"),
        }
        match ask(&server) {
            Err(ChatError::Status { status, body, .. }) => assert_eq!(
                (status, body.as_str()),
                (
                    400,
                    r#"{"error":{"code":400,"message":"invalid tool call arguments"}}"#
                )
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_server_that_cannot_stream_tools_is_asked_again_without_streaming() {
        let server = Server::start(vec![
            Canned::Json(
                500,
                r#"{"error":{"code":500,"message":"Cannot use tools with stream","type":"server_error"}}"#.into(),
            ),
            Canned::Json(200, r#"{"choices":[{"message":{"content":"whole"}}]}"#.into()),
        ]);
        let mut client = client(&server.url, timeouts(2000, 2000, 2000));
        for _ in 0..2 {
            let reply = client.complete(&conversation(), &tools()).expect("a reply");
            assert_eq!(reply.content.as_deref(), Some("whole"));
        }
        let requests = server.received();
        let streams: Vec<&Value> = requests.iter().map(|request| &request["stream"]).collect();
        assert_eq!(streams, [&json!(true), &json!(false), &json!(false)]);
        assert_eq!(requests[1].get("stream_options"), None);
    }

    #[test]
    fn without_tools_the_request_has_no_tools_field() {
        let server = Server::start(vec![streamed_text("ok")]);
        let reply = client(&server.url, timeouts(2000, 2000, 2000))
            .complete(&conversation(), &[])
            .expect("a reply");
        assert_eq!(reply.content.as_deref(), Some("ok"));
        assert_eq!(server.received()[0].get("tools"), None);
    }
}
