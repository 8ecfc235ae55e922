//! The tools the model may call: their declarations for the chat request, their
//! description for models that call tools in text, and [`Toolbox::run`], which runs
//! one call and turns whatever happens into an answer for the model.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::file_tools::{
    EDIT_USAGE, LIST_USAGE, READ_USAGE, WRITE_USAGE, edit_file, list_dir, read_file, write_file,
};
use super::search::{SEARCH_USAGE, search_text};
use super::shell::Shell;
use super::tool_args::ToolArgs;
use super::workspace::Workspace;

/// Runs the tools in one working directory.
#[derive(Debug)]
pub struct Toolbox {
    shell: Shell,
    workspace: Workspace,
}

/// What one tool call gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// The shell command's exit code; `None` for the other tools, and for a command
    /// that timed out, was killed or never started.
    pub exit_code: Option<i32>,
    /// What the model reads; errors start with `error:`.
    pub text: String,
}

/// The tools' names, in the order they are declared.
pub const TOOL_NAMES: [&str; 6] = [
    "shell",
    "read_file",
    "write_file",
    "edit_file",
    "list_dir",
    "search_text",
];

const SHELL_USAGE: &str = r#"{"command": "ls -la"}"#;

impl Toolbox {
    #[must_use]
    pub fn new(workdir: &Path, shell_timeout: Duration) -> Self {
        Self {
            shell: Shell::new(shell_timeout),
            workspace: Workspace::new(workdir),
        }
    }

    /// Runs the tool `name` with the JSON `arguments` the model wrote.
    #[must_use]
    pub fn run(&self, name: &str, arguments: &str) -> ToolOutcome {
        let usage = match name {
            "shell" => SHELL_USAGE,
            "read_file" => READ_USAGE,
            "write_file" => WRITE_USAGE,
            "edit_file" => EDIT_USAGE,
            "list_dir" => LIST_USAGE,
            "search_text" => SEARCH_USAGE,
            _ => {
                return ToolOutcome {
                    exit_code: None,
                    text: format!(
                        "error: there is no tool named `{name}`; the tools are {}",
                        TOOL_NAMES.join(", ")
                    ),
                };
            }
        };
        // `list_dir` may be called with no arguments at all.
        let arguments = if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        };
        let args = match ToolArgs::parse(name, arguments, usage) {
            Ok(args) => args,
            Err(text) => {
                return ToolOutcome {
                    exit_code: None,
                    text,
                };
            }
        };
        if name == "shell" {
            return match args.string("command") {
                Ok(command) => {
                    let output = self.shell.run(&command, self.workspace.root());
                    ToolOutcome {
                        exit_code: output.exit_code(),
                        text: output.to_model_text(),
                    }
                }
                Err(text) => ToolOutcome {
                    exit_code: None,
                    text,
                },
            };
        }
        let result = match name {
            "read_file" => read_file(&self.workspace, &args),
            "write_file" => write_file(&self.workspace, &args),
            "edit_file" => edit_file(&self.workspace, &args),
            "list_dir" => list_dir(&self.workspace, &args),
            _ => search_text(&self.workspace, &args),
        };
        ToolOutcome {
            exit_code: None,
            text: result.unwrap_or_else(|error| error),
        }
    }

    /// The declarations for the chat request's `tools` array.
    #[must_use]
    pub fn declarations() -> Vec<Value> {
        vec![
            Shell::spec(),
            function(
                "read_file",
                "Read a text file; the lines come numbered. Long files come in parts: \
                 ask for a range of lines.",
                &json!({
                    "path": {"type": "string", "description": "The file, relative to the working directory"},
                    "start_line": {"type": "integer", "minimum": 1, "description": "First line to show (default 1)"},
                    "end_line": {"type": "integer", "minimum": 1, "description": "Last line to show (default: the end)"}
                }),
                &["path"],
            ),
            function(
                "write_file",
                "Write a whole file, replacing it if it exists; missing folders are created.",
                &json!({
                    "path": {"type": "string", "description": "The file, relative to the working directory"},
                    "content": {"type": "string", "description": "The complete new content"}
                }),
                &["path", "content"],
            ),
            function(
                "edit_file",
                "Replace one exact piece of a file's text. `old_text` must occur exactly \
                 once, spaces and line breaks included.",
                &json!({
                    "path": {"type": "string", "description": "The file, relative to the working directory"},
                    "old_text": {"type": "string", "description": "The text to replace, copied exactly"},
                    "new_text": {"type": "string", "description": "The text to put in its place"}
                }),
                &["path", "old_text", "new_text"],
            ),
            function(
                "list_dir",
                "List a directory's entries, sorted; folders end in `/`.",
                &json!({
                    "path": {"type": "string", "description": "The directory (default: the working directory)"},
                    "depth": {"type": "integer", "minimum": 1, "maximum": 6, "description": "How many levels deep (default 1)"}
                }),
                &[],
            ),
            function(
                "search_text",
                "Find lines matching a pattern in the files under a path (skips .git and \
                 binary files); results are file:line:text.",
                &json!({
                    "pattern": {"type": "string", "description": "The text to find"},
                    "regex": {"type": "boolean", "description": "Treat the pattern as a regular expression (default false: literal text)"},
                    "ignore_case": {"type": "boolean", "description": "Ignore upper and lower case (default false)"},
                    "path": {"type": "string", "description": "A directory or file to search (default: the working directory)"}
                }),
                &["pattern"],
            ),
        ]
    }

    /// The tools in plain words, for a system prompt that asks for calls in text.
    #[must_use]
    pub fn describe() -> String {
        let mut text = String::new();
        for declaration in Self::declarations() {
            let function = &declaration["function"];
            let required: Vec<&str> = function["parameters"]["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let parameters: Vec<String> = function["parameters"]["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, schema)| {
                    let kind = schema["type"].as_str().unwrap_or("string");
                    let optional = if required.contains(&name.as_str()) {
                        ""
                    } else {
                        ", optional"
                    };
                    format!("{name} ({kind}{optional})")
                })
                .collect();
            let _ = writeln!(
                text,
                "- {}: {} Arguments: {}.",
                function["name"].as_str().unwrap_or_default(),
                function["description"].as_str().unwrap_or_default(),
                if parameters.is_empty() {
                    "none".to_owned()
                } else {
                    parameters.join(", ")
                }
            );
        }
        text
    }
}

/// One function declaration.
fn function(name: &str, description: &str, properties: &Value, required: &[&str]) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required}
        }
    })
}
