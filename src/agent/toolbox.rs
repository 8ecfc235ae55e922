//! The tools the model may call: their declarations for the chat request, their
//! description for models that call tools in text, and [`Toolbox::run`], which runs
//! one call and turns whatever happens into an answer for the model. Beside the
//! agent's own tools are those of the task's MCP servers ([`McpServers`]).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::file_tools::{
    EDIT_USAGE, LIST_USAGE, READ_USAGE, WRITE_USAGE, edit_file, list_dir, read_file, write_file,
};
use super::mcp::McpServers;
use super::search::{SEARCH_USAGE, search_text};
use super::shell::Shell;
use super::tool_args::ToolArgs;
use super::workspace::Workspace;

/// Runs the tools in one working directory.
#[derive(Debug)]
pub struct Toolbox {
    mcp: McpServers,
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
            mcp: McpServers::none(),
            shell: Shell::new(shell_timeout),
            workspace: Workspace::new(workdir),
        }
    }

    /// The same tools, whose shell commands are also killed at `deadline`, the end of
    /// the task's time.
    #[must_use]
    pub fn with_deadline(self, deadline: Option<std::time::Instant>) -> Self {
        Self {
            shell: self.shell.with_deadline(deadline),
            ..self
        }
    }

    /// Offers the tools of these MCP servers too, instead of any before.
    pub fn set_mcp(&mut self, mcp: McpServers) {
        self.mcp = mcp;
    }

    /// Stops the MCP servers; the agent's own tools go on working.
    pub fn stop_mcp(&mut self) {
        self.mcp.stop();
    }

    /// Every tool's name, the agent's own first.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        let mut names = TOOL_NAMES.to_vec();
        names.extend(self.mcp.names());
        names
    }

    /// Runs the tool `name` with the JSON `arguments` the model wrote.
    #[must_use]
    pub fn run(&self, name: &str, arguments: &str) -> ToolOutcome {
        if let Some(outcome) = self.mcp.call(name, arguments) {
            return outcome;
        }
        let Some(spec) = SPECS.iter().find(|spec| spec.name == name) else {
            return ToolOutcome {
                exit_code: None,
                text: format!(
                    "error: there is no tool named `{name}`; the tools are {}",
                    self.names().join(", ")
                ),
            };
        };
        // `list_dir` may be called with no arguments at all.
        let arguments = if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        };
        let args = match ToolArgs::parse(name, arguments, spec.usage) {
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
    pub fn declarations(&self) -> Vec<Value> {
        let mut declarations: Vec<Value> = SPECS.iter().map(Spec::declaration).collect();
        declarations.extend(self.mcp.declarations());
        declarations
    }

    /// The tools in plain words, one line each, for a system prompt that asks for calls
    /// in text: `- read_file(path, start_line?, end_line?): Read …`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for spec in &SPECS {
            let parameters: Vec<String> = spec
                .parameters
                .iter()
                .map(|parameter| {
                    let optional = if parameter.required { "" } else { "?" };
                    format!("{}{optional}", parameter.name)
                })
                .collect();
            let _ = writeln!(
                text,
                "- {}({}): {}",
                spec.name,
                parameters.join(", "),
                spec.about
            );
        }
        text.push_str(&self.mcp.describe());
        text.push_str("(? marks an optional argument.)\n");
        text
    }
}

/// One tool as the model is told about it.
struct Spec {
    about: &'static str,
    name: &'static str,
    parameters: &'static [Parameter],
    /// Good arguments, quoted when a call gets them wrong.
    usage: &'static str,
}

/// One argument of a tool.
struct Parameter {
    about: &'static str,
    /// The JSON schema type: `string`, `integer` or `boolean`.
    kind: &'static str,
    name: &'static str,
    required: bool,
}

const fn parameter(
    name: &'static str,
    kind: &'static str,
    required: bool,
    about: &'static str,
) -> Parameter {
    Parameter {
        about,
        kind,
        name,
        required,
    }
}

/// Every tool, in the order of [`TOOL_NAMES`].
const SPECS: [Spec; 6] = [
    Spec {
        about: "Run a command with `sh -c` in the working directory; returns its exit code \
                and its output (stdout and stderr). Stdin is empty; commands that run too \
                long are killed.",
        name: "shell",
        parameters: &[parameter(
            "command",
            "string",
            true,
            "The command line to run",
        )],
        usage: SHELL_USAGE,
    },
    Spec {
        about: "Read a text file, lines numbered; for a long file, ask for a range of lines.",
        name: "read_file",
        parameters: &[
            parameter("path", "string", true, "The file"),
            parameter(
                "start_line",
                "integer",
                false,
                "First line to show (default 1)",
            ),
            parameter(
                "end_line",
                "integer",
                false,
                "Last line to show (default: the end)",
            ),
        ],
        usage: READ_USAGE,
    },
    Spec {
        about: "Write a whole file, replacing it; missing folders are created.",
        name: "write_file",
        parameters: &[
            parameter("path", "string", true, "The file"),
            parameter("content", "string", true, "The complete new content"),
        ],
        usage: WRITE_USAGE,
    },
    Spec {
        about: "Replace a piece of a file's text; old_text must occur exactly once, spaces \
                and line breaks included.",
        name: "edit_file",
        parameters: &[
            parameter("path", "string", true, "The file"),
            parameter(
                "old_text",
                "string",
                true,
                "The text to replace, copied exactly",
            ),
            parameter("new_text", "string", true, "The text to put in its place"),
        ],
        usage: EDIT_USAGE,
    },
    Spec {
        about: "List a directory, sorted; folders end in `/`.",
        name: "list_dir",
        parameters: &[
            parameter(
                "path",
                "string",
                false,
                "The directory (default: the working directory)",
            ),
            parameter(
                "depth",
                "integer",
                false,
                "How many levels deep, 1 to 6 (default 1)",
            ),
        ],
        usage: LIST_USAGE,
    },
    Spec {
        about: "Find the lines that contain a text, as file:line:text, in the files under \
                a path (not in .git or binary files).",
        name: "search_text",
        parameters: &[
            parameter("pattern", "string", true, "The text to find"),
            parameter(
                "regex",
                "boolean",
                false,
                "The pattern is a regular expression (default: literal text)",
            ),
            parameter(
                "ignore_case",
                "boolean",
                false,
                "Ignore case (default false)",
            ),
            parameter(
                "path",
                "string",
                false,
                "A directory or file (default: the working directory)",
            ),
        ],
        usage: SEARCH_USAGE,
    },
];

impl Spec {
    /// The function declaration for the chat request.
    fn declaration(&self) -> Value {
        let properties: serde_json::Map<String, Value> = self
            .parameters
            .iter()
            .map(|parameter| {
                let mut schema = json!({"type": parameter.kind, "description": parameter.about});
                if parameter.kind == "integer" {
                    schema["minimum"] = json!(1);
                }
                (parameter.name.to_owned(), schema)
            })
            .collect();
        let required: Vec<&str> = self
            .parameters
            .iter()
            .filter(|parameter| parameter.required)
            .map(|parameter| parameter.name)
            .collect();
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.about,
                "parameters": {"type": "object", "properties": properties, "required": required}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toolbox() -> Toolbox {
        Toolbox::new(Path::new("/"), Duration::from_secs(10))
    }

    #[test]
    fn the_specs_follow_the_names() {
        let names: Vec<&str> = SPECS.iter().map(|spec| spec.name).collect();
        assert_eq!(names, TOOL_NAMES);
    }

    #[test]
    fn declarations_are_json_schemas() {
        assert_eq!(
            toolbox().declarations()[1],
            json!({"type": "function", "function": {
                "name": "read_file",
                "description": "Read a text file, lines numbered; for a long file, ask for a range of lines.",
                "parameters": {"type": "object", "required": ["path"], "properties": {
                    "path": {"type": "string", "description": "The file"},
                    "start_line": {"type": "integer", "minimum": 1, "description": "First line to show (default 1)"},
                    "end_line": {"type": "integer", "minimum": 1, "description": "Last line to show (default: the end)"}
                }}
            }})
        );
        for declaration in toolbox().declarations() {
            let parameters = &declaration["function"]["parameters"];
            for required in parameters["required"].as_array().expect("required") {
                let name = required.as_str().expect("a name");
                assert!(
                    parameters["properties"].get(name).is_some(),
                    "{declaration}"
                );
            }
        }
    }

    #[test]
    fn the_description_has_one_line_a_tool() {
        assert_eq!(
            toolbox().describe(),
            "- shell(command): Run a command with `sh -c` in the working directory; returns \
             its exit code and its output (stdout and stderr). Stdin is empty; commands that \
             run too long are killed.\n\
             - read_file(path, start_line?, end_line?): Read a text file, lines numbered; for \
             a long file, ask for a range of lines.\n\
             - write_file(path, content): Write a whole file, replacing it; missing folders \
             are created.\n\
             - edit_file(path, old_text, new_text): Replace a piece of a file's text; \
             old_text must occur exactly once, spaces and line breaks included.\n\
             - list_dir(path?, depth?): List a directory, sorted; folders end in `/`.\n\
             - search_text(pattern, regex?, ignore_case?, path?): Find the lines that \
             contain a text, as file:line:text, in the files under a path (not in .git or \
             binary files).\n\
             (? marks an optional argument.)\n"
        );
    }

    #[test]
    fn shell_calls_report_the_exit_code_and_bad_calls_say_how() {
        let dir = tempfile::tempdir().expect("temp dir");
        let toolbox = Toolbox::new(dir.path(), Duration::from_secs(10));
        assert_eq!(
            toolbox.run("shell", r#"{"command": "pwd; exit 4"}"#),
            ToolOutcome {
                exit_code: Some(4),
                text: format!("exit code 4\n{}\n", dir.path().display())
            }
        );
        assert_eq!(
            toolbox.run("shell", r#"{"cmd": "ls"}"#),
            ToolOutcome {
                exit_code: None,
                text: r#"error: `shell` needs `command` (a string); call it like {"command": "ls -la"}"#.into()
            }
        );
        assert_eq!(
            toolbox.run("list_dir", ""),
            ToolOutcome {
                exit_code: None,
                text: "`.` is empty".into()
            }
        );
    }
}
