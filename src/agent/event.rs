//! The events `openmono agent` writes on stdout, one JSON object per line.
//!
//! The agent serializes them inside the container and the host deserializes the same
//! lines, so this type is the whole protocol between the two: every line carries an
//! `event` tag in snake case (`start`, `model_turn`, …), and `final` is always last.

use serde::{Deserialize, Serialize};

/// One thing that happened in the agent loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The loop is about to send its first request.
    Start {
        model: String,
        model_url: String,
        max_steps: u32,
    },
    /// The model answered one request.
    ModelTurn {
        step: u32,
        /// The reply's text; `None` when the model sent none (often with tool calls).
        content: Option<String>,
        /// How many tool calls the reply asked for.
        tool_calls: u32,
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
    },
    /// The model asked for a tool; `arguments` is the raw JSON text it sent.
    ToolCall {
        step: u32,
        id: String,
        name: String,
        arguments: String,
    },
    /// What a tool call gave back to the model, shortened for the event stream.
    ToolResult {
        step: u32,
        id: String,
        /// The command's exit code; `None` when it timed out, was killed by a signal,
        /// could not start, or the call never reached a command.
        exit_code: Option<i32>,
        output: String,
        /// Whether `output` is shorter than what the model was given.
        truncated: bool,
    },
    /// The task's check ran after the model's final answer of round `round`; when it
    /// failed, its output went back to the model for another round.
    Check {
        round: u32,
        step: u32,
        /// The check's exit code; `None` when it timed out, was killed or never started.
        exit_code: Option<i32>,
        /// Its status line and output, shortened for the event stream.
        output: String,
        /// Whether `output` is shorter than what the model was given.
        truncated: bool,
    },
    /// An MCP server of the task started, and these of its tools are offered to the
    /// model; or it did not, for this reason, and none are.
    McpServer {
        server: String,
        tools: Vec<String>,
        error: Option<String>,
    },
    /// The run is over; always the last event, on success and on failure.
    Final {
        answer: String,
        steps: u32,
        reason: EndReason,
    },
    /// Something went wrong talking to the model; a `Final` follows.
    Error { message: String },
    /// The conversation no longer fit the model's context: older tool outputs were
    /// elided and old turns dropped, and the request goes out again, smaller.
    Compacted {
        step: u32,
        /// What the server said about the context.
        reason: String,
        /// How many old model turns (with their tool results) were dropped.
        dropped_turns: u32,
        /// How many tool outputs and tool-call arguments were replaced by a short note.
        elided: u32,
        /// The conversation's size in bytes of text before and after.
        bytes_before: u64,
        bytes_after: u64,
    },
    /// The server refused native tool calls: from this step on, the tools are
    /// described in the system prompt and called in fenced `tool` blocks of text.
    TextTools { step: u32, reason: String },
}

/// Why the agent loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The model gave a final answer.
    Done,
    /// The step budget ran out before the model was done.
    BudgetSpent,
    /// The model server could not be reached (refused, timed out, unresolvable).
    ModelUnreachable,
    /// The model server answered, but with an error status or an unreadable reply.
    ModelError,
    /// The model server took too long: to accept the connection, to send the first
    /// token, or between two parts of a streamed reply.
    ModelTimeout,
    /// The conversation exceeds the model's context even after compacting it.
    ContextFull,
    /// The task's wall-clock time (`--timeout`) ran out.
    TimeSpent,
    /// Stopped from outside: the run was interrupted or another step failed. The host
    /// writes this one into the transcript, since the agent is stopped without a say.
    Interrupted,
}

impl EndReason {
    /// The exit code of `openmono agent` for a run that ended this way.
    #[must_use]
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Done => 0,
            Self::BudgetSpent => 2,
            Self::ModelUnreachable | Self::ModelError | Self::ModelTimeout | Self::ContextFull => 3,
            // As `openmono supervise` and coreutils' `timeout` say it.
            Self::TimeSpent => crate::agent::supervise::TIMED_OUT,
            Self::Interrupted => 130,
        }
    }
}

impl AgentEvent {
    /// The event as one line of JSON, without the trailing newline.
    #[must_use]
    pub fn to_line(&self) -> String {
        // Serializing these plain types cannot fail; the fallback keeps the stream
        // well-formed rather than panicking should that ever change.
        serde_json::to_string(self).unwrap_or_else(|error| {
            serde_json::json!({ "event": "error", "message": format!("could not encode event: {error}") })
                .to_string()
        })
    }

    /// Reads one line back; `None` for anything that is not an event, so the host can
    /// skip stray output instead of failing on it.
    #[must_use]
    pub fn parse_line(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<AgentEvent> {
        vec![
            AgentEvent::Start {
                model: "default".into(),
                model_url: "http://coder:8080".into(),
                max_steps: 20,
            },
            AgentEvent::ModelTurn {
                step: 1,
                content: None,
                tool_calls: 2,
                prompt_tokens: Some(120),
                completion_tokens: None,
            },
            AgentEvent::ToolCall {
                step: 1,
                id: "call_1".into(),
                name: "shell".into(),
                arguments: r#"{"command":"ls\n"}"#.into(),
            },
            AgentEvent::ToolResult {
                step: 1,
                id: "call_1".into(),
                exit_code: Some(0),
                output: "exit code 0\na\tb \"c\" ✓".into(),
                truncated: true,
            },
            AgentEvent::Check {
                round: 1,
                step: 2,
                exit_code: Some(1),
                output: "exit code 1\nFAILED".into(),
                truncated: false,
            },
            AgentEvent::McpServer {
                server: "notes".into(),
                tools: vec!["notes__add".into()],
                error: None,
            },
            AgentEvent::McpServer {
                server: "broken".into(),
                tools: Vec::new(),
                error: Some("the MCP handshake failed".into()),
            },
            AgentEvent::Final {
                answer: String::new(),
                steps: 3,
                reason: EndReason::BudgetSpent,
            },
            AgentEvent::Error {
                message: "model server returned 500".into(),
            },
            AgentEvent::Compacted {
                step: 4,
                reason: "request (724 tokens) exceeds the available context size (512 tokens)"
                    .into(),
                dropped_turns: 1,
                elided: 3,
                bytes_before: 9000,
                bytes_after: 1200,
            },
            AgentEvent::TextTools {
                step: 1,
                reason: "tools param requires --jinja flag".into(),
            },
            AgentEvent::Final {
                answer: "late".into(),
                steps: 2,
                reason: EndReason::ModelTimeout,
            },
            AgentEvent::Final {
                answer: String::new(),
                steps: 5,
                reason: EndReason::ContextFull,
            },
        ]
    }

    #[test]
    fn every_event_round_trips_through_one_line() {
        for event in samples() {
            let line = event.to_line();
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(AgentEvent::parse_line(&line), Some(event));
        }
    }

    #[test]
    fn lines_carry_snake_case_tags() {
        let line = AgentEvent::Final {
            answer: "ok".into(),
            steps: 1,
            reason: EndReason::ModelUnreachable,
        }
        .to_line();
        assert_eq!(
            line,
            r#"{"event":"final","answer":"ok","steps":1,"reason":"model_unreachable"}"#
        );
        let turn = AgentEvent::ModelTurn {
            step: 1,
            content: None,
            tool_calls: 0,
            prompt_tokens: None,
            completion_tokens: None,
        };
        assert!(turn.to_line().starts_with(r#"{"event":"model_turn","#));
        let compacted = AgentEvent::Compacted {
            step: 2,
            reason: "too long".into(),
            dropped_turns: 1,
            elided: 2,
            bytes_before: 300,
            bytes_after: 100,
        };
        assert_eq!(
            compacted.to_line(),
            r#"{"event":"compacted","step":2,"reason":"too long","dropped_turns":1,"elided":2,"bytes_before":300,"bytes_after":100}"#
        );
        let check = AgentEvent::Check {
            round: 2,
            step: 5,
            exit_code: None,
            output: "timed out".into(),
            truncated: true,
        };
        assert_eq!(
            check.to_line(),
            r#"{"event":"check","round":2,"step":5,"exit_code":null,"output":"timed out","truncated":true}"#
        );
        let text_tools = AgentEvent::TextTools {
            step: 1,
            reason: "no".into(),
        };
        assert_eq!(
            text_tools.to_line(),
            r#"{"event":"text_tools","step":1,"reason":"no"}"#
        );
        for (reason, tag, code) in [
            (EndReason::ModelTimeout, "model_timeout", 3),
            (EndReason::ContextFull, "context_full", 3),
            (EndReason::TimeSpent, "time_spent", 124),
            (EndReason::Interrupted, "interrupted", 130),
        ] {
            let line = AgentEvent::Final {
                answer: String::new(),
                steps: 0,
                reason,
            }
            .to_line();
            assert_eq!(
                line,
                format!(r#"{{"event":"final","answer":"","steps":0,"reason":"{tag}"}}"#)
            );
            assert_eq!(reason.exit_code(), code);
        }
    }

    #[test]
    fn parse_line_skips_what_is_not_an_event() {
        assert_eq!(AgentEvent::parse_line(""), None);
        assert_eq!(AgentEvent::parse_line("hello"), None);
        assert_eq!(AgentEvent::parse_line(r#"{"event":"nope"}"#), None);
        assert_eq!(
            AgentEvent::parse_line("  {\"event\":\"error\",\"message\":\"x\"}\r\n"),
            Some(AgentEvent::Error {
                message: "x".into()
            })
        );
    }
}
