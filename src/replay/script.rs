//! A replay script: the replies a scripted model gives, in order, and how each is
//! delivered. In go the script's text; out come, per request, the [`Canned`] answers
//! that [`super::server`] writes.
//!
//! A script is JSON Lines, one reply per line (blank lines and lines starting with `#`
//! are skipped):
//!
//! ```text
//! {"content": "Let me look.", "tool_calls": [{"name": "shell", "arguments": {"command": "ls"}}]}
//! {"tool_calls": [{"name": "edit_file", "arguments": {"path": "a.py", "old_text": "1", "new_text": "2"}}], "chunks": 4}
//! {"overflow": 400}
//! {"content": "Done.", "end": "cut"}
//! ```
//!
//! An openmono transcript (a run's `TASK.jsonl`) is a script too: each model turn is
//! replayed with its tool calls, each compaction as a context overflow, and a switch to
//! tools in text as the refusal that caused it.

use serde::Deserialize;
use serde_json::{Value, json};

use super::server::{CallPieces, Canned, error_body, error_json, stream_events};
use crate::agent::AgentEvent;

/// The replies of a script, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub replies: Vec<Reply>,
    /// Whether it was read from an openmono transcript.
    pub transcript: bool,
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The model answers: text, tool calls, or both.
    Answer {
        calls: Vec<Call>,
        /// How many stream chunks the text and each call's arguments are split into.
        chunks: usize,
        content: Option<String>,
        end: End,
    },
    /// The server answers with this status and body.
    Error { body: String, status: u16 },
    /// The server says the conversation exceeds its context, as llama-server does: a
    /// 400 with the token counts, or a 500 saying the context is exceeded.
    Overflow(u16),
}

/// A tool call of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The arguments as sent: JSON text, or anything else for a malformed call.
    pub arguments: String,
    pub id: String,
    pub name: String,
}

/// How a reply's delivery ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// The connection is cut halfway through the reply.
    Cut,
    /// Whole, as a server sends it.
    Done,
    /// The reply never ends: text keeps coming for as long as the client reads.
    Endless,
    /// The server process exits halfway through the reply.
    Exit,
}

/// One line of a script, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    body: Option<Value>,
    chunks: Option<usize>,
    content: Option<String>,
    end: Option<End>,
    overflow: Option<u16>,
    status: Option<u16>,
    tool_calls: Option<Vec<CallLine>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallLine {
    #[serde(default)]
    arguments: Option<Value>,
    id: Option<String>,
    name: String,
}

/// What a server that refuses native tool calls says (llama-server without `--jinja`).
const TOOLS_REFUSED: &str = "tools param requires --jinja flag";

impl Script {
    /// Reads a script file; the error says which line is wrong and why.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_owned(),
            std::io::ErrorKind::InvalidData => "is not UTF-8 text".to_owned(),
            _ => format!("cannot read it: {e}"),
        })?;
        Self::parse(&text)
    }

    /// Reads a script's text: JSON Lines of replies, or an openmono transcript.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .collect();
        let transcript = lines.first().is_some_and(|(_, line)| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| v.get("event").is_some())
        });
        let replies = if transcript {
            from_transcript(&lines)?
        } else {
            lines
                .iter()
                .map(|(number, line)| reply(line).map_err(|why| format!("line {number}: {why}")))
                .collect::<Result<_, _>>()?
        };
        if replies.is_empty() {
            return Err("it has no replies".to_owned());
        }
        Ok(Self {
            replies,
            transcript,
        })
    }

    /// The answer to request `index` (0 for the first), whose body is `request`.
    pub fn answer(&self, index: usize, request: &Value) -> Canned {
        let Some(reply) = self.replies.get(index) else {
            return error_body(
                500,
                &format!(
                    "replay: the script has {} replies and this is request {}",
                    self.replies.len(),
                    index + 1
                ),
            );
        };
        let prompt_tokens = request.to_string().len() / 4 + 1;
        match reply {
            Reply::Error { body, status } => Canned::Json(*status, body.clone()),
            Reply::Overflow(400) => {
                let context = prompt_tokens * 3 / 4;
                Canned::Json(
                    400,
                    json!({"error": {"code": 400, "message": format!(
                        "request ({prompt_tokens} tokens) exceeds the available context size ({context} tokens), try increasing it"
                    ), "type": "exceed_context_size_error", "n_prompt_tokens": prompt_tokens, "n_ctx": context}})
                    .to_string(),
                )
            }
            Reply::Overflow(_) => error_body(
                500,
                "the request exceeds the available context size. try increasing the context size or enable context shift",
            ),
            Reply::Answer {
                calls,
                chunks,
                content,
                end,
            } => {
                let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
                answer(
                    calls,
                    *chunks,
                    content.as_deref(),
                    *end,
                    stream,
                    prompt_tokens,
                )
            }
        }
    }
}

/// How an answer goes out: streamed or whole, and how it ends.
fn answer(
    calls: &[Call],
    chunks: usize,
    content: Option<&str>,
    end: End,
    stream: bool,
    prompt_tokens: usize,
) -> Canned {
    let written =
        content.map_or(0, str::len) + calls.iter().map(|c| c.arguments.len()).sum::<usize>();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": written / 4 + 1,
        "total_tokens": prompt_tokens + written / 4 + 1
    });
    if stream || end == End::Endless {
        let pieces = content.map(|text| split(text, chunks));
        let calls: Vec<CallPieces> = calls
            .iter()
            .map(|call| CallPieces {
                arguments: split(&call.arguments, chunks),
                id: call.id.clone(),
                name: call.name.clone(),
            })
            .collect();
        let mut events = stream_events(pieces.as_deref(), &calls, &usage);
        // The role and the pieces; the finish, the usage and `[DONE]` are the last three.
        let body = events.len() - 3;
        match end {
            End::Done => Canned::Stream(events),
            End::Endless => {
                events.truncate(body);
                Canned::Endless(events)
            }
            End::Cut | End::Exit => {
                events.truncate(body.div_ceil(2));
                cut_or_exit(end, Canned::Cut(events))
            }
        }
    } else {
        let message = json!({
            "role": "assistant",
            "content": content,
            "tool_calls": calls.iter().map(|call| json!({
                "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": call.arguments}
            })).collect::<Vec<_>>(),
        });
        let reason = if calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        let body = json!({
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": reason}],
            "usage": usage,
        })
        .to_string();
        match end {
            End::Done | End::Endless => Canned::Json(200, body),
            End::Cut | End::Exit => cut_or_exit(end, Canned::Truncated(200, body)),
        }
    }
}

fn cut_or_exit(end: End, cut: Canned) -> Canned {
    if end == End::Exit {
        Canned::Exit(Box::new(cut))
    } else {
        cut
    }
}

/// `text` in `parts` pieces of about the same number of characters (fewer when it is
/// shorter); the empty text is one empty piece.
fn split(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(parts.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// One line of a script as a reply.
fn reply(line: &str) -> Result<Reply, String> {
    let line: Line = serde_json::from_str(line).map_err(|e| {
        // serde_json ends its message with the place in the line.
        let text = e.to_string();
        let message = text
            .rsplit_once(" at line ")
            .map_or(text.as_str(), |(m, _)| m);
        format!("column {}: {message}", e.column())
    })?;
    let answer = line.content.is_some() || line.tool_calls.is_some();
    let kinds = [answer, line.overflow.is_some(), line.status.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(
            "a reply has `content` and/or `tool_calls`, or `overflow`, or `status`: exactly one kind"
                .to_owned(),
        );
    }
    if !answer && (line.chunks.is_some() || line.end.is_some()) {
        return Err("`chunks` and `end` go with `content` or `tool_calls`".to_owned());
    }
    if line.body.is_some() && line.status.is_none() {
        return Err("`body` goes with `status`".to_owned());
    }
    if let Some(status) = line.overflow {
        return match status {
            400 | 500 => Ok(Reply::Overflow(status)),
            _ => Err(format!(
                "`overflow` is 400 (with token counts) or 500 (\"context exceeded\"), not {status}"
            )),
        };
    }
    if let Some(status) = line.status {
        if !(400..=599).contains(&status) {
            return Err(format!(
                "`status` is an error status, 400 to 599, not {status}"
            ));
        }
        let body = match line.body {
            Some(Value::String(text)) => text,
            Some(value) => value.to_string(),
            None => error_json(status, "scripted error"),
        };
        return Ok(Reply::Error { body, status });
    }
    let chunks = line.chunks.unwrap_or(1);
    if chunks == 0 {
        return Err("`chunks` is at least 1".to_owned());
    }
    let calls = line
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, call)| Call {
            arguments: match call.arguments {
                Some(Value::String(raw)) => raw,
                Some(value) => value.to_string(),
                None => "{}".to_owned(),
            },
            id: call.id.unwrap_or_else(|| format!("call_{index}")),
            name: call.name,
        })
        .collect();
    Ok(Reply::Answer {
        calls,
        chunks,
        content: line.content,
        end: line.end.unwrap_or(End::Done),
    })
}

/// The replies of a recorded session: its model turns with their native tool calls,
/// its compactions as overflows, its switch to tools in text as a refusal.
fn from_transcript(lines: &[(usize, &str)]) -> Result<Vec<Reply>, String> {
    let mut replies = Vec::new();
    // Native tool calls of the last model turn still to come.
    let mut pending = 0;
    let mut in_text = false;
    for (number, line) in lines {
        let event = AgentEvent::parse_line(line)
            .ok_or_else(|| format!("line {number}: not an event of an openmono transcript"))?;
        match event {
            AgentEvent::ModelTurn {
                content,
                tool_calls,
                ..
            } => {
                pending = if in_text { 0 } else { tool_calls };
                replies.push(Reply::Answer {
                    calls: Vec::new(),
                    chunks: 1,
                    content,
                    end: End::Done,
                });
            }
            AgentEvent::ToolCall {
                arguments,
                id,
                name,
                ..
            } if pending > 0 => {
                pending -= 1;
                if let Some(Reply::Answer { calls, .. }) = replies.last_mut() {
                    calls.push(Call {
                        arguments,
                        id,
                        name,
                    });
                }
            }
            AgentEvent::Compacted { .. } => replies.push(Reply::Overflow(400)),
            AgentEvent::TextTools { .. } => {
                in_text = true;
                replies.push(Reply::Error {
                    body: error_json(500, TOOLS_REFUSED),
                    status: 500,
                });
            }
            _ => {}
        }
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistakes_name_their_line() {
        let mut wrong = Vec::new();
        for (text, expected) in [
            ("", "it has no replies"),
            ("# only a comment\n\n", "it has no replies"),
            (
                "{\"content\": \"a\"}\n{\"tool_call\": []}",
                "line 2: column 12: unknown field `tool_call`, expected one of `body`, `chunks`, `content`, `end`, `overflow`, `status`, `tool_calls`",
            ),
            (
                "{\"content\": \"a\"",
                "line 1: column 15: EOF while parsing an object",
            ),
            (
                "{\"content\": \"a\", \"overflow\": 400}",
                "line 1: a reply has `content` and/or `tool_calls`, or `overflow`, or `status`: exactly one kind",
            ),
            (
                "{}",
                "line 1: a reply has `content` and/or `tool_calls`, or `overflow`, or `status`: exactly one kind",
            ),
            (
                "{\"overflow\": 413}",
                "line 1: `overflow` is 400 (with token counts) or 500 (\"context exceeded\"), not 413",
            ),
            (
                "{\"status\": 200}",
                "line 1: `status` is an error status, 400 to 599, not 200",
            ),
            (
                "{\"status\": 500, \"end\": \"cut\"}",
                "line 1: `chunks` and `end` go with `content` or `tool_calls`",
            ),
            (
                "{\"content\": \"a\", \"body\": \"x\"}",
                "line 1: `body` goes with `status`",
            ),
            (
                "{\"content\": \"a\", \"chunks\": 0}",
                "line 1: `chunks` is at least 1",
            ),
            (
                "{\"content\": \"a\", \"end\": \"never\"}",
                "line 1: column 31: unknown variant `never`, expected one of `cut`, `done`, `endless`, `exit`",
            ),
            (
                "{\"tool_calls\": [{\"arguments\": {}}]}",
                "line 1: column 33: missing field `name`",
            ),
        ] {
            let got = Script::parse(text);
            if got != Err(expected.to_owned()) {
                wrong.push(format!("{text:?}: {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn replies_of_every_kind() {
        let script = Script::parse(
            "# a comment\n\
             {\"content\": \"hi\", \"tool_calls\": [{\"name\": \"shell\", \"arguments\": {\"command\": \"ls\"}}, {\"id\": \"x\", \"name\": \"shell\", \"arguments\": \"{bad\"}], \"chunks\": 3, \"end\": \"exit\"}\n\
             \n\
             {\"overflow\": 500}\n\
             {\"status\": 503, \"body\": {\"error\": \"busy\"}}\n\
             {\"status\": 502}\n\
             {\"tool_calls\": [{\"name\": \"list_dir\"}]}\n",
        )
        .expect("parses");
        assert_eq!(
            script,
            Script {
                replies: vec![
                    Reply::Answer {
                        calls: vec![
                            Call {
                                arguments: r#"{"command":"ls"}"#.into(),
                                id: "call_0".into(),
                                name: "shell".into()
                            },
                            Call {
                                arguments: "{bad".into(),
                                id: "x".into(),
                                name: "shell".into()
                            },
                        ],
                        chunks: 3,
                        content: Some("hi".into()),
                        end: End::Exit
                    },
                    Reply::Overflow(500),
                    Reply::Error {
                        body: r#"{"error":"busy"}"#.into(),
                        status: 503
                    },
                    Reply::Error {
                        body: error_json(502, "scripted error"),
                        status: 502
                    },
                    Reply::Answer {
                        calls: vec![Call {
                            arguments: "{}".into(),
                            id: "call_0".into(),
                            name: "list_dir".into()
                        }],
                        chunks: 1,
                        content: None,
                        end: End::Done
                    },
                ],
                transcript: false
            }
        );
    }

    #[test]
    fn text_is_split_into_chunks_of_about_one_size() {
        assert_eq!(split("abcdefg", 3), ["abc", "def", "g"]);
        assert_eq!(split("ab", 5), ["a", "b"]);
        assert_eq!(split("", 4), [""]);
        assert_eq!(split("é€x", 1), ["é€x"]);
    }

    #[test]
    fn whole_and_streamed_answers_and_the_end_of_the_script() {
        let script = Script::parse("{\"content\": \"abcd\", \"chunks\": 2, \"end\": \"cut\"}")
            .expect("parses");
        let streamed = json!({"stream": true, "messages": []});
        let Canned::Cut(events) = script.answer(0, &streamed) else {
            panic!("a cut stream")
        };
        // The role and the first of the two pieces.
        assert_eq!(events.len(), 2);
        assert!(events[1].contains(r#""content":"ab""#), "{events:?}");
        let Canned::Truncated(200, body) = script.answer(0, &json!({"stream": false})) else {
            panic!("a cut body")
        };
        assert!(body.contains(r#""content":"abcd""#), "{body}");
        assert_eq!(
            script.answer(1, &streamed),
            error_body(
                500,
                "replay: the script has 1 replies and this is request 2"
            )
        );
    }

    #[test]
    fn a_transcript_replays_its_turns_calls_compactions_and_refusals() {
        let lines = [
            AgentEvent::Start {
                model: "m".into(),
                model_url: "http://m:8080".into(),
                max_steps: 5,
            },
            AgentEvent::ModelTurn {
                step: 1,
                content: None,
                tool_calls: 1,
                prompt_tokens: None,
                completion_tokens: None,
            },
            AgentEvent::ToolCall {
                step: 1,
                id: "c1".into(),
                name: "shell".into(),
                arguments: r#"{"command":"ls"}"#.into(),
            },
            AgentEvent::Compacted {
                step: 2,
                reason: "too long".into(),
                dropped_turns: 0,
                elided: 1,
                bytes_before: 10,
                bytes_after: 5,
            },
            AgentEvent::TextTools {
                step: 2,
                reason: TOOLS_REFUSED.into(),
            },
            AgentEvent::ModelTurn {
                step: 2,
                content: Some("```tool\n{\"name\": \"list_dir\"}\n```".into()),
                tool_calls: 1,
                prompt_tokens: None,
                completion_tokens: None,
            },
            AgentEvent::ToolCall {
                step: 2,
                id: "call_2_0".into(),
                name: "list_dir".into(),
                arguments: "{}".into(),
            },
            AgentEvent::Final {
                answer: String::new(),
                steps: 2,
                reason: crate::agent::EndReason::BudgetSpent,
            },
        ];
        let text: String = lines.iter().map(|e| e.to_line() + "\n").collect();
        let script = Script::parse(&text).expect("a transcript");
        assert!(script.transcript);
        assert_eq!(
            script.replies,
            [
                Reply::Answer {
                    calls: vec![Call {
                        arguments: r#"{"command":"ls"}"#.into(),
                        id: "c1".into(),
                        name: "shell".into()
                    }],
                    chunks: 1,
                    content: None,
                    end: End::Done
                },
                Reply::Overflow(400),
                Reply::Error {
                    body: error_json(500, TOOLS_REFUSED),
                    status: 500
                },
                Reply::Answer {
                    calls: Vec::new(),
                    chunks: 1,
                    content: Some("```tool\n{\"name\": \"list_dir\"}\n```".into()),
                    end: End::Done
                },
            ]
        );
        assert_eq!(
            Script::parse(&format!("{}\nnot json\n", lines[0].to_line())),
            Err("line 2: not an event of an openmono transcript".to_owned())
        );
    }
}
