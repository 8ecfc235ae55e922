//! The conversation as the chat API carries it: [`Message`]s with their roles, and the
//! [`ToolCall`]s a model turn makes.

use serde::Serialize;

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

    /// Bytes of text this message puts into a request: its content and its calls'
    /// names and arguments. The measure compaction shrinks.
    #[must_use]
    pub fn size(&self) -> usize {
        let calls: usize = self
            .tool_calls
            .iter()
            .map(|call| call.function.name.len() + call.function.arguments.len())
            .sum();
        self.content.as_deref().map_or(0, str::len) + calls
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn size_counts_content_names_and_arguments() {
        assert_eq!(Message::user("héllo").size(), 6);
        let call = ToolCall::new("c1", "shell", r#"{"command":"ls"}"#);
        assert_eq!(
            Message::assistant(Some("ok".into()), vec![call]).size(),
            2 + 5 + 16
        );
        assert_eq!(Message::assistant(None, Vec::new()).size(), 0);
    }
}
