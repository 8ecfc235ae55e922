//! What the model answered: a [`Reply`], assembled by a [`ReplyBuilder`] from the
//! chunks of a streamed answer or from one whole JSON answer.
//!
//! A streamed tool call comes in fragments: `delta.tool_calls[i]` carries an `index`,
//! and, spread over any number of chunks, the call's `id`, its `function.name` and
//! pieces of `function.arguments` (the first fragment may already hold the name and the
//! start of the arguments; several calls may interleave). The builder joins the pieces
//! by index. It reads leniently: servers differ in which fields they fill, and a
//! missing field is not worth a crash.

use serde::Deserialize;
use serde_json::Value;

use super::message::ToolCall;

/// The parts of a reply the agent uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The text; `None` when the server sent `null` or nothing.
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// Token counts, when the server reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
}

/// Joins the chunks of one answer into a [`Reply`].
#[derive(Debug, Default)]
pub struct ReplyBuilder {
    /// The tool calls so far, in the order they first appeared.
    calls: Vec<PartialCall>,
    content: Option<String>,
    /// Counts from llama.cpp's `timings`, used when there is no `usage`.
    timings: Usage,
    usage: Option<Usage>,
}

/// One tool call, as far as it has arrived.
#[derive(Debug)]
struct PartialCall {
    arguments: String,
    id: String,
    /// The `index` the server gave it, or its position when it gave none.
    index: u64,
    name: String,
}

impl ReplyBuilder {
    /// Adds one chunk of a stream (its `choices[0].delta`) or a whole answer (its
    /// `choices[0].message`); returns whether it carried part of the answer itself:
    /// text, a tool call or a finish reason (a chunk that only announces the role does
    /// not count).
    pub fn push(&mut self, chunk: &Value) -> bool {
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.usage = Usage::deserialize(usage).ok();
        }
        if let Some(timings) = chunk.get("timings") {
            let count = |name: &str| timings.get(name).and_then(Value::as_u64);
            self.timings = Usage {
                completion_tokens: count("predicted_n"),
                prompt_tokens: count("prompt_n").map(|n| n + count("cache_n").unwrap_or(0)),
            };
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.first())
        else {
            return false;
        };
        let mut answered = choice
            .get("finish_reason")
            .is_some_and(|reason| !reason.is_null());
        let (part, whole) = match (choice.get("delta"), choice.get("message")) {
            (Some(delta), _) => (delta, false),
            (None, Some(message)) => (message, true),
            (None, None) => return answered,
        };
        if let Some(text) = part.get("content").cloned().and_then(content_text)
            && !text.is_empty()
        {
            self.content.get_or_insert_default().push_str(&text);
            answered = true;
        }
        // Thinking models stream their reasoning first: it is progress, not answer.
        answered |= part
            .get("reasoning_content")
            .and_then(Value::as_str)
            .is_some_and(|text| !text.is_empty());
        for (position, fragment) in part
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            self.push_call(fragment, whole.then_some(position as u64));
            answered = true;
        }
        answered
    }

    /// Adds one fragment of a tool call; `position` is its place in a whole message,
    /// which stands in for a missing `index` there.
    fn push_call(&mut self, fragment: &Value, position: Option<u64>) {
        let id = fragment.get("id").and_then(Value::as_str).unwrap_or("");
        let index = fragment.get("index").and_then(Value::as_u64).or(position);
        let slot = match index {
            Some(index) => self.calls.iter().position(|call| call.index == index),
            // A stream without indexes: the same id, or no id at all, continues a call.
            None => self
                .calls
                .iter()
                .rposition(|call| !id.is_empty() && call.id == id)
                .or_else(|| {
                    (id.is_empty() && !self.calls.is_empty()).then(|| self.calls.len() - 1)
                }),
        };
        let slot = slot.unwrap_or_else(|| {
            let index = index.unwrap_or(self.calls.len() as u64);
            self.calls.push(PartialCall {
                arguments: String::new(),
                id: String::new(),
                index,
                name: String::new(),
            });
            self.calls.len() - 1
        });
        let call = &mut self.calls[slot];
        if call.id.is_empty() {
            id.clone_into(&mut call.id);
        }
        let function = fragment.get("function");
        if let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) {
            // Names come whole in one fragment; some servers repeat them in every one.
            if call.name != name {
                call.name.push_str(name);
            }
        }
        match function.and_then(|f| f.get("arguments")) {
            Some(Value::String(piece)) => call.arguments.push_str(piece),
            None | Some(Value::Null) => {}
            // The API says arguments are JSON text, but some servers send the object.
            Some(other) => call.arguments = other.to_string(),
        }
    }

    /// Whether nothing of an answer has arrived: no text and no tool call.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.content.is_none() && self.calls.is_empty()
    }

    /// The reply as it stands.
    #[must_use]
    pub fn finish(self) -> Reply {
        let tool_calls = self
            .calls
            .into_iter()
            .map(|call| {
                let arguments = if call.arguments.trim().is_empty() {
                    "{}".to_owned()
                } else {
                    call.arguments
                };
                ToolCall::new(call.id, call.name, arguments)
            })
            .collect();
        Reply {
            content: self.content,
            tool_calls,
            usage: self.usage.unwrap_or(self.timings),
        }
    }
}

/// Reads a whole (not streamed) chat completion into a [`Reply`]; the error is a
/// reason for humans.
pub fn parse_reply(body: &str) -> Result<Reply, String> {
    let value: Value = serde_json::from_str(body)
        .map_err(|error| format!("{error}: {}", excerpt(body, EXCERPT_LIMIT)))?;
    let has_choice = value
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|choices| !choices.is_empty());
    if !has_choice {
        return Err(format!("no choices: {}", excerpt(body, EXCERPT_LIMIT)));
    }
    let mut builder = ReplyBuilder::default();
    builder.push(&value);
    Ok(builder.finish())
}

/// Longest piece of a bad body quoted in a reason.
const EXCERPT_LIMIT: usize = 2000;

/// Content is usually a string, but may come as a list of typed parts.
fn content_text(content: Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.concat())
        }
        _ => None,
    }
}

/// The text trimmed and cut to at most `limit` bytes, on a character boundary.
#[must_use]
pub fn excerpt(text: &str, limit: usize) -> String {
    let text = text.trim();
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn built(chunks: &[Value]) -> (Vec<bool>, Reply) {
        let mut builder = ReplyBuilder::default();
        let answered = chunks.iter().map(|chunk| builder.push(chunk)).collect();
        (answered, builder.finish())
    }

    fn delta(delta: &Value) -> Value {
        json!({"choices": [{"index": 0, "delta": delta}]})
    }

    #[test]
    fn fragments_without_index_follow_their_id_or_the_last_call() {
        let (answered, reply) = built(&[
            delta(&json!({"role": "assistant"})),
            delta(
                &json!({"tool_calls": [{"id": "a", "function": {"name": "shell", "arguments": "{\"comm"}}]}),
            ),
            delta(&json!({"tool_calls": [{"function": {"arguments": "and\":\"ls\"}"}}]})),
            delta(&json!({"tool_calls": [{"id": "b", "function": {"name": "list_dir"}}]})),
            delta(&json!({"tool_calls": [{"id": "a", "function": {"name": "shell"}}]})),
        ]);
        assert_eq!(answered, [false, true, true, true, true]);
        assert_eq!(
            reply.tool_calls,
            vec![
                ToolCall::new("a", "shell", r#"{"command":"ls"}"#),
                ToolCall::new("b", "list_dir", "{}"),
            ]
        );
    }

    #[test]
    fn names_in_pieces_are_joined_and_repeated_names_kept_once() {
        let (_, reply) = built(&[
            delta(&json!({"tool_calls": [{"index": 0, "function": {"name": "read_"}}]})),
            delta(&json!({"tool_calls": [{"index": 0, "function": {"name": "file"}}]})),
            delta(
                &json!({"tool_calls": [{"index": 1, "function": {"name": "shell", "arguments": {"command": "ls"}}}]}),
            ),
            delta(&json!({"tool_calls": [{"index": 1, "function": {"name": "shell"}}]})),
        ]);
        assert_eq!(
            reply.tool_calls,
            vec![
                ToolCall::new("", "read_file", "{}"),
                ToolCall::new("", "shell", r#"{"command":"ls"}"#),
            ]
        );
    }

    #[test]
    fn content_null_is_no_text_and_typed_parts_are_joined() {
        let (answered, reply) = built(&[
            delta(&json!({"content": null})),
            delta(&json!({"content": ""})),
            json!({"choices": [{"delta": {"reasoning_content": "hmm"}}]}),
        ]);
        assert_eq!(answered, [false, false, true]);
        assert_eq!(reply.content, None);
        let whole = parse_reply(
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#,
        )
        .expect("a reply");
        assert_eq!(whole.content.as_deref(), Some("ab"));
        assert_eq!(whole.usage, Usage::default());
    }

    #[test]
    fn usage_wins_over_timings() {
        let (answered, reply) = built(&[
            json!({"choices": [], "timings": {"prompt_n": 3, "predicted_n": 2}}),
            json!({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 30, "completion_tokens": 20}}),
        ]);
        assert_eq!(answered, [false, true]);
        assert_eq!(
            reply.usage,
            Usage {
                completion_tokens: Some(20),
                prompt_tokens: Some(30)
            }
        );
    }

    #[test]
    fn whole_replies_without_choices_are_refused() {
        assert_eq!(
            parse_reply(r#"{"choices":[]}"#),
            Err(r#"no choices: {"choices":[]}"#.into())
        );
        assert_eq!(
            parse_reply(r#"{"error":"x"}"#),
            Err(r#"no choices: {"error":"x"}"#.into())
        );
        assert_eq!(
            parse_reply("<html>"),
            Err("expected value at line 1 column 1: <html>".into())
        );
    }

    #[test]
    fn excerpt_trims_and_cuts_on_a_boundary() {
        assert_eq!(excerpt("  hi \n", 10), "hi");
        assert_eq!(excerpt("ééé", 3), "é…");
    }
}
