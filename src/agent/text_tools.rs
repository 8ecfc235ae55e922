//! Tool calls written in text, for models and servers without native tool calling.
//!
//! The one form understood is a fenced block tagged `tool` that holds a JSON object
//! with the tool's `name` and its `arguments` (`parameters` is taken too):
//!
//! ````text
//! ```tool
//! {"name": "read_file", "arguments": {"path": "README.md"}}
//! ```
//! ````
//!
//! A reply may hold several such blocks. The system prompt describes the form (see
//! [`instructions`]) when the agent runs with `--text-tools` or the server refused
//! native tool calls; a reply with such a block is read as a call in any case.

use serde_json::Value;

use super::toolbox::Toolbox;

/// A tool call found in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextCall {
    /// The arguments as JSON text.
    pub arguments: String,
    /// The tool's name; for a block that is not a call, `tool`.
    pub name: String,
    /// Why the block is not a call, as an answer for the model.
    pub problem: Option<String>,
}

/// The fence that opens a call.
const FENCE: &str = "```tool";

const EXAMPLE: &str = r#"{"name": "read_file", "arguments": {"path": "README.md"}}"#;

/// The tool calls in a reply's text, in order.
#[must_use]
pub fn find_calls(text: &str) -> Vec<TextCall> {
    let mut calls = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != FENCE {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|line| !line.trim_start().starts_with("```"))
            .collect();
        calls.push(read_block(&block.join("\n")));
    }
    calls
}

/// One block's call, or what is wrong with it.
fn read_block(block: &str) -> TextCall {
    let problem = |why: String| TextCall {
        arguments: block.trim().to_owned(),
        name: "tool".to_owned(),
        problem: Some(format!(
            "error: a ```tool block must hold one JSON object like {EXAMPLE}; {why}"
        )),
    };
    let value: Value = match serde_json::from_str(block) {
        Ok(value) => value,
        Err(error) => return problem(format!("this one is not valid JSON ({error})")),
    };
    let Some(name) = value.get("name").and_then(Value::as_str) else {
        return problem("this one has no \"name\"".to_owned());
    };
    let arguments = match value.get("arguments").or_else(|| value.get("parameters")) {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    TextCall {
        arguments,
        name: name.to_owned(),
        problem: None,
    }
}

/// The part of the system prompt that teaches the form and lists the tools.
#[must_use]
pub fn instructions(toolbox: &Toolbox) -> String {
    format!(
        "To use a tool, write a block like this, with the tool's name and arguments:\n\
         {FENCE}\n{EXAMPLE}\n```\nSeveral blocks may follow each other; their results \
         come back in the next message. A reply without a tool block is your final \
         answer. The tools:\n{}",
        toolbox.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> TextCall {
        TextCall {
            arguments: arguments.into(),
            name: name.into(),
            problem: None,
        }
    }

    #[test]
    fn finds_every_block_in_order() {
        let text = "Let me look.\n```tool\n{\"name\": \"list_dir\", \"arguments\": {\"path\": \"src\"}}\n```\nand\n  ```tool  \n{\"name\": \"shell\",\n \"parameters\": \"{\\\"command\\\": \\\"ls\\\"}\"}\n```\n```tool\n{\"name\": \"list_dir\"}\n```";
        assert_eq!(
            find_calls(text),
            vec![
                call("list_dir", r#"{"path":"src"}"#),
                call("shell", r#"{"command": "ls"}"#),
                call("list_dir", "{}"),
            ]
        );
    }

    #[test]
    fn other_fences_and_plain_json_are_not_calls() {
        assert_eq!(find_calls("```json\n{\"name\": \"shell\"}\n```"), vec![]);
        assert_eq!(
            find_calls("{\"name\": \"shell\", \"arguments\": {}}"),
            vec![]
        );
        assert_eq!(find_calls("The answer is 42."), vec![]);
    }

    #[test]
    fn a_bad_block_is_a_call_that_fails() {
        let calls = find_calls("```tool\n{\"name\": \"shell\", \n```\n```tool\n[1]\n```");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "tool");
        assert_eq!(calls[0].arguments, "{\"name\": \"shell\",");
        assert_eq!(
            calls[0].problem.as_deref(),
            Some(
                "error: a ```tool block must hold one JSON object like {\"name\": \"read_file\", \
                 \"arguments\": {\"path\": \"README.md\"}}; this one is not valid JSON (EOF \
                 while parsing a value at line 1 column 18)"
            )
        );
        assert_eq!(
            calls[1].problem.as_deref(),
            Some(
                "error: a ```tool block must hold one JSON object like {\"name\": \"read_file\", \
                 \"arguments\": {\"path\": \"README.md\"}}; this one has no \"name\""
            )
        );
    }

    #[test]
    fn the_instructions_show_the_form_and_list_the_tools() {
        let toolbox = Toolbox::new(std::path::Path::new("/"), std::time::Duration::from_secs(1));
        let text = instructions(&toolbox);
        assert!(
            text.starts_with(
                "To use a tool, write a block like this, with the tool's name and arguments:\n\
                 ```tool\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"README.md\"}}\n\
                 ```\nSeveral blocks may follow each other; their results come back in the \
                 next message. A reply without a tool block is your final answer. The \
                 tools:\n- shell(command): "
            ),
            "{text}"
        );
        assert!(text.ends_with(&toolbox.describe()), "{text}");
    }

    #[test]
    fn an_unclosed_block_runs_to_the_end() {
        assert_eq!(
            find_calls("```tool\n{\"name\": \"shell\", \"arguments\": {\"command\": \"ls\"}}"),
            vec![call("shell", r#"{"command":"ls"}"#)]
        );
    }
}
