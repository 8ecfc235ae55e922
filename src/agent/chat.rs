//! The client for the model server's OpenAI-compatible chat API (llama.cpp's
//! `llama-server`), and the messages it carries.
//!
//! In go the conversation so far and the tool declarations; out comes a [`Reply`] with
//! the model's text, its tool calls and the token counts, or a [`ChatError`] that says
//! whether the server was unreachable or answered badly. Requests are plain HTTP and not
//! streamed. Replies are read leniently: `llama-server` versions and other compatible
//! servers differ in which fields they fill, and a missing field is not worth a crash.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::EndReason;

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
}

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The server answered with a body that is not a chat completion.
    #[error("model server at {endpoint} sent an unreadable reply: {reason}")]
    BadReply { endpoint: String, reason: String },
    /// The server answered with a non-2xx status.
    #[error("model server at {endpoint} answered {status}: {body}")]
    Status {
        body: String,
        endpoint: String,
        status: u16,
    },
    /// No answer at all: refused, unresolvable, reset or timed out.
    #[error("could not reach the model server at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
}

/// One message of the conversation, as sent to the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Always sent, as `null` when absent: an assistant turn that only calls tools has
    /// no text, and servers accept `null` there.
    pub content: Option<String>,
    pub role: Role,
    /// Which call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Assistant,
    System,
    Tool,
    User,
}

/// A tool call the model made, normalized: `arguments` is always JSON text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub function: FunctionCall,
    /// Empty when the server sent no id; the caller makes one up.
    pub id: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCall {
    /// The arguments as the model wrote them; not necessarily valid JSON.
    pub arguments: String,
    pub name: String,
}

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

#[derive(Serialize)]
struct Request<'a> {
    max_tokens: u32,
    messages: &'a [Message],
    model: &'a str,
    stream: bool,
    tools: &'a [Value],
}

#[derive(Deserialize)]
struct RawResponse {
    #[serde(default)]
    choices: Option<Vec<RawChoice>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct RawChoice {
    message: RawMessage,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<RawToolCall>>,
}

#[derive(Deserialize)]
struct RawToolCall {
    #[serde(default)]
    function: Option<RawFunction>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct RawFunction {
    #[serde(default)]
    arguments: Option<Value>,
    #[serde(default)]
    name: Option<String>,
}

/// Longest server error body quoted in a [`ChatError`].
const ERROR_BODY_LIMIT: usize = 2000;

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
    /// A client for `model_url` (e.g. `http://coder:8080`) that gives up on a request
    /// after `timeout`.
    #[must_use]
    pub fn new(model_url: &str, model: &str, max_tokens: u32, timeout: Duration) -> Self {
        Self {
            agent: http_agent(timeout),
            endpoint: format!("{}/v1/chat/completions", model_url.trim_end_matches('/')),
            max_tokens,
            model: model.to_owned(),
        }
    }

    /// Sends the conversation and returns the first choice of the reply.
    pub fn complete(&self, messages: &[Message], tools: &[Value]) -> Result<Reply, ChatError> {
        let request = Request {
            max_tokens: self.max_tokens,
            messages,
            model: &self.model,
            stream: false,
            tools,
        };
        let mut response = self
            .agent
            .post(&self.endpoint)
            .send_json(&request)
            .map_err(|error| self.transport_error(&error))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|error| self.transport_error(&error))?;
        if !(200..300).contains(&status) {
            return Err(ChatError::Status {
                body: excerpt(&body, ERROR_BODY_LIMIT),
                endpoint: self.endpoint.clone(),
                status,
            });
        }
        parse_reply(&body).map_err(|reason| ChatError::BadReply {
            endpoint: self.endpoint.clone(),
            reason,
        })
    }

    /// Sorts a ureq error: trouble on the way is "unreachable", anything the server
    /// said that HTTP itself cannot make sense of is a bad reply.
    fn transport_error(&self, error: &ureq::Error) -> ChatError {
        let endpoint = self.endpoint.clone();
        let reason = error.to_string();
        match error {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::BadUri(_) => ChatError::Unreachable { endpoint, reason },
            _ => ChatError::BadReply { endpoint, reason },
        }
    }
}

impl ChatError {
    /// How a run that stops on this error ends.
    #[must_use]
    pub fn end_reason(&self) -> EndReason {
        match self {
            Self::Unreachable { .. } => EndReason::ModelUnreachable,
            Self::BadReply { .. } | Self::Status { .. } => EndReason::ModelError,
        }
    }
}

impl Message {
    #[must_use]
    pub fn system(text: impl Into<String>) -> Self {
        Self::text(Role::System, text.into())
    }

    #[must_use]
    pub fn user(text: impl Into<String>) -> Self {
        Self::text(Role::User, text.into())
    }

    /// The model's own turn, replayed so that the tool results that follow fit it.
    #[must_use]
    pub fn assistant(content: Option<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            content,
            role: Role::Assistant,
            tool_call_id: None,
            tool_calls,
        }
    }

    /// The answer to the tool call `id`.
    #[must_use]
    pub fn tool(id: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            content: Some(text.into()),
            role: Role::Tool,
            tool_call_id: Some(id.into()),
            tool_calls: Vec::new(),
        }
    }

    fn text(role: Role, text: String) -> Self {
        Self {
            content: Some(text),
            role,
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }
}

impl ToolCall {
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            function: FunctionCall {
                arguments: arguments.into(),
                name: name.into(),
            },
            id: id.into(),
            kind: "function",
        }
    }
}

/// Reads a chat completion body into a [`Reply`]; the error is a reason for humans.
fn parse_reply(body: &str) -> Result<Reply, String> {
    let raw: RawResponse = serde_json::from_str(body)
        .map_err(|error| format!("{error}: {}", excerpt(body, ERROR_BODY_LIMIT)))?;
    let Some(choice) = raw.choices.and_then(|choices| choices.into_iter().next()) else {
        return Err(format!("no choices: {}", excerpt(body, ERROR_BODY_LIMIT)));
    };
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|call| {
            let function = call.function.unwrap_or(RawFunction {
                arguments: None,
                name: None,
            });
            ToolCall::new(
                call.id.unwrap_or_default(),
                function.name.unwrap_or_default(),
                arguments_text(function.arguments),
            )
        })
        .collect();
    Ok(Reply {
        content: choice.message.content.and_then(content_text),
        tool_calls,
        usage: raw.usage.unwrap_or_default(),
    })
}

/// The API says arguments are JSON text, but some servers send the object itself.
fn arguments_text(arguments: Option<Value>) -> String {
    match arguments {
        Some(Value::String(text)) => text,
        None | Some(Value::Null) => "{}".to_owned(),
        Some(other) => other.to_string(),
    }
}

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
pub(super) fn excerpt(text: &str, limit: usize) -> String {
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

    #[test]
    fn parses_text_tool_calls_and_usage() {
        let reply = parse_reply(
            r#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[
                {"id":"a","type":"function","function":{"name":"shell","arguments":"{\"command\":\"ls\"}"}},
                {"type":"function","function":{"name":"shell","arguments":{"command":"pwd"}}}
            ]}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#,
        );
        let reply = reply.expect("a reply");
        assert_eq!(reply.content, None);
        assert_eq!(
            reply.tool_calls,
            vec![
                ToolCall::new("a", "shell", r#"{"command":"ls"}"#),
                ToolCall::new("", "shell", r#"{"command":"pwd"}"#),
            ]
        );
        assert_eq!(
            reply.usage,
            Usage {
                completion_tokens: Some(5),
                prompt_tokens: Some(10)
            }
        );
    }

    #[test]
    fn tolerates_missing_fields_and_typed_content() {
        let reply = parse_reply(r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#)
            .expect("a reply");
        assert_eq!(reply.content.as_deref(), Some("ab"));
        assert!(reply.tool_calls.is_empty());
        assert_eq!(reply.usage, Usage::default());
    }

    #[test]
    fn rejects_replies_without_choices() {
        assert!(parse_reply(r#"{"choices":[]}"#).is_err());
        assert!(parse_reply(r#"{"error":"x"}"#).is_err());
        assert!(parse_reply("<html>").is_err());
    }

    #[test]
    fn messages_serialize_as_the_api_expects() {
        let call = ToolCall::new("c1", "shell", "{}");
        assert_eq!(
            serde_json::to_value(Message::assistant(None, vec![call])).ok(),
            Some(serde_json::json!({
                "content": null, "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]
            }))
        );
        assert_eq!(
            serde_json::to_value(Message::tool("c1", "exit code 0")).ok(),
            Some(
                serde_json::json!({"content": "exit code 0", "role": "tool", "tool_call_id": "c1"})
            )
        );
    }

    #[test]
    fn excerpt_trims_and_cuts_on_a_boundary() {
        assert_eq!(excerpt("  hi \n", 10), "hi");
        assert_eq!(excerpt("ééé", 3), "é…");
    }
}
