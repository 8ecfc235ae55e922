//! The task's MCP servers: started inside the box over stdio, their tools offered to
//! the model beside the agent's own, stopped at the end.
//!
//! In go the servers the task declares ([`McpSpec`]: a name and a shell command); out
//! come [`McpServers`], which know each server's tools under the name the model sees,
//! `SERVER__TOOL`, and run a call of one as a [`ToolOutcome`]. The protocol is
//! [`rmcp`]'s client over a child process's stdin and stdout; its stderr is the
//! agent's, which the host keeps in the task's log.
//!
//! Nothing here fails the agent: a server that does not start or answer is left out
//! and reported ([`McpStart`]), and a call that fails (a tool error, a server that
//! died, a call that takes too long) is an answer for the model. Each server runs in
//! its own process group; stopping it closes its stdin, as the MCP spec says, then
//! signals it, then kills the whole group.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

use super::toolbox::ToolOutcome;

/// A server as the task declares it: `--mcp NAME=COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpSpec {
    /// A shell command line, run with `sh -c` in the agent's working directory.
    pub command: String,
    pub name: String,
}

/// The running servers and their tools.
pub struct McpServers {
    /// Drives the clients; only there when a server was declared.
    runtime: Option<tokio::runtime::Runtime>,
    servers: Vec<Server>,
    /// Every tool of every running server, in the servers' order.
    tools: Vec<Tool>,
    /// How long starting a server, or one call, may take.
    timeout: Duration,
}

/// One running server.
struct Server {
    /// Its process group, led by the shell that runs its command.
    group: Option<u32>,
    name: String,
    service: Option<RunningService<RoleClient, ()>>,
}

/// One tool as the model sees it.
struct Tool {
    description: String,
    /// `SERVER__TOOL`.
    exposed: String,
    /// Its name on its server.
    name: String,
    /// The JSON schema of its arguments.
    schema: Value,
    /// Its server's index in `servers`.
    server: usize,
}

/// How starting one server went, for the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpStart {
    /// Why it is not running.
    pub error: Option<String>,
    pub server: String,
    /// Its tools, as the model sees them.
    pub tools: Vec<String>,
}

/// Between a server's name and its tool's in the name the model sees.
const SEPARATOR: &str = "__";

impl McpSpec {
    /// Reads `NAME=COMMAND`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            Some((name, command)) if !name.is_empty() && !command.trim().is_empty() => Ok(Self {
                command: command.to_owned(),
                name: name.to_owned(),
            }),
            _ => Err(format!("expected NAME=COMMAND, got `{text}`")),
        }
    }
}

impl McpServers {
    /// No servers: no tools.
    #[must_use]
    pub fn none() -> Self {
        Self {
            runtime: None,
            servers: Vec::new(),
            tools: Vec::new(),
            timeout: Duration::ZERO,
        }
    }

    /// Starts every server in `workdir` and lists its tools; `timeout` bounds the start
    /// of each and, later, each call.
    #[must_use]
    pub fn start(specs: &[McpSpec], workdir: &Path, timeout: Duration) -> (Self, Vec<McpStart>) {
        let mut servers = Self::none();
        servers.timeout = timeout;
        if specs.is_empty() {
            return (servers, Vec::new());
        }
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let starts = specs
                    .iter()
                    .map(|spec| McpStart {
                        error: Some(format!("cannot start an async runtime: {error}")),
                        server: spec.name.clone(),
                        tools: Vec::new(),
                    })
                    .collect();
                return (servers, starts);
            }
        };
        let mut starts = Vec::new();
        for spec in specs {
            let (server, listed) = runtime.block_on(connect(spec, workdir, timeout));
            let index = servers.servers.len();
            let start = match listed {
                Ok(tools) => {
                    let names = servers.add_tools(index, &spec.name, tools);
                    McpStart {
                        error: None,
                        server: spec.name.clone(),
                        tools: names,
                    }
                }
                Err(error) => McpStart {
                    error: Some(error),
                    server: spec.name.clone(),
                    tools: Vec::new(),
                },
            };
            servers.servers.push(server);
            starts.push(start);
        }
        servers.runtime = Some(runtime);
        // A server that did not come up is stopped at once; nothing of it is offered.
        for (index, start) in starts.iter().enumerate() {
            if start.error.is_some() {
                servers.stop_one(index);
            }
        }
        (servers, starts)
    }

    /// Adds a server's tools under their exposed names; returns those names.
    fn add_tools(
        &mut self,
        server: usize,
        prefix: &str,
        tools: Vec<rmcp::model::Tool>,
    ) -> Vec<String> {
        let mut names = Vec::new();
        for tool in tools {
            let exposed = exposed_name(prefix, &tool.name);
            if self.tools.iter().any(|t| t.exposed == exposed) {
                // Two tools whose names differ only in characters a function name
                // cannot hold: the first keeps the name.
                continue;
            }
            names.push(exposed.clone());
            self.tools.push(Tool {
                description: tool.description.map(Cow::into_owned).unwrap_or_default(),
                exposed,
                name: tool.name.into_owned(),
                schema: Value::Object((*tool.input_schema).clone()),
                server,
            });
        }
        names
    }

    /// The names the model sees, in order.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.tools
            .iter()
            .map(|tool| tool.exposed.as_str())
            .collect()
    }

    /// The declarations for the chat request's `tools` array.
    #[must_use]
    pub fn declarations(&self) -> Vec<Value> {
        self.tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.exposed,
                        "description": tool.description,
                        "parameters": tool.schema,
                    }
                })
            })
            .collect()
    }

    /// One line a tool, for a system prompt that asks for calls in text.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for tool in &self.tools {
            let _ = writeln!(
                text,
                "- {}({}): {}",
                tool.exposed,
                parameter_names(&tool.schema).join(", "),
                tool.description
            );
        }
        text
    }

    /// Runs the call if `name` is one of the servers' tools; `None` otherwise.
    #[must_use]
    pub fn call(&self, name: &str, arguments: &str) -> Option<ToolOutcome> {
        let tool = self.tools.iter().find(|tool| tool.exposed == name)?;
        let answer = |text: String| ToolOutcome {
            exit_code: None,
            text,
        };
        let arguments = match call_arguments(name, arguments) {
            Ok(arguments) => arguments,
            Err(text) => return Some(answer(text)),
        };
        let server = &self.servers[tool.server];
        let (Some(runtime), Some(service)) = (&self.runtime, &server.service) else {
            return Some(answer(format!(
                "error: the MCP server `{}` is not running",
                server.name
            )));
        };
        let mut params = CallToolRequestParams::new(tool.name.clone());
        params.arguments = Some(arguments);
        // The timer needs the runtime: make it inside.
        let called = runtime.block_on(async {
            tokio::time::timeout(self.timeout, service.peer().call_tool(params)).await
        });
        Some(answer(match called {
            Ok(Ok(result)) => result_text(&result),
            Ok(Err(error)) => failure_text(&server.name, &error),
            Err(_) => format!(
                "error: the MCP server `{}` did not answer within {}s",
                server.name,
                self.timeout.as_secs()
            ),
        }))
    }

    /// Stops every server still running.
    pub fn stop(&mut self) {
        for index in 0..self.servers.len() {
            self.stop_one(index);
        }
    }

    /// Closes a server's stdin and waits for it (rmcp signals and kills it when it
    /// lingers), then kills whatever is left of its process group.
    fn stop_one(&mut self, index: usize) {
        let server = &mut self.servers[index];
        if let (Some(runtime), Some(service)) = (&self.runtime, server.service.take()) {
            let _ = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), service.cancel()).await
            });
        }
        if let Some(group) = server.group.take() {
            kill_group(group);
        }
    }
}

impl std::fmt::Debug for McpServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServers")
            .field(
                "servers",
                &self.servers.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("tools", &self.names())
            .finish_non_exhaustive()
    }
}

impl Drop for McpServers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts one server and lists its tools. The server comes back even when that failed,
/// so that what did start can be stopped.
async fn connect(
    spec: &McpSpec,
    workdir: &Path,
    timeout: Duration,
) -> (Server, Result<Vec<rmcp::model::Tool>, String>) {
    let mut server = Server {
        group: None,
        name: spec.name.clone(),
        service: None,
    };
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&spec.command)
        .current_dir(workdir)
        // Its own group, so that stopping it stops everything it started.
        .process_group(0);
    let spawned = TokioChildProcess::builder(command)
        .stderr(Stdio::inherit())
        .spawn();
    let transport = match spawned {
        Ok((transport, _)) => transport,
        Err(error) => {
            return (
                server,
                Err(format!("cannot start `{}`: {error}", spec.command)),
            );
        }
    };
    server.group = transport.id();
    let service = match tokio::time::timeout(timeout, rmcp::serve_client((), transport)).await {
        Ok(Ok(service)) => service,
        Ok(Err(error)) => {
            return (server, Err(format!("the MCP handshake failed: {error}")));
        }
        Err(_) => {
            return (
                server,
                Err(format!(
                    "no answer to the MCP handshake within {}s",
                    timeout.as_secs()
                )),
            );
        }
    };
    let listed = tokio::time::timeout(timeout, service.list_all_tools()).await;
    server.service = Some(service);
    let tools = match listed {
        Ok(Ok(tools)) => Ok(tools),
        Ok(Err(error)) => Err(format!("cannot list its tools: {error}")),
        Err(_) => Err(format!(
            "no answer to `tools/list` within {}s",
            timeout.as_secs()
        )),
    };
    (server, tools)
}

/// `SERVER__TOOL`, with every character a function name cannot hold as `_`, at most 64
/// characters (what OpenAI-compatible servers accept).
fn exposed_name(server: &str, tool: &str) -> String {
    format!("{server}{SEPARATOR}{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The property names of an object schema, required ones first, optional ones with `?`.
fn parameter_names(schema: &Value) -> Vec<String> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut names: Vec<String> = required.iter().map(|&name| name.to_owned()).collect();
    if let Some(properties) = schema["properties"].as_object() {
        names.extend(
            properties
                .keys()
                .filter(|name| !required.contains(&name.as_str()))
                .map(|name| format!("{name}?")),
        );
    }
    names
}

/// The model's arguments as the object the server wants; empty text is no arguments.
fn call_arguments(tool: &str, raw: &str) -> Result<serde_json::Map<String, Value>, String> {
    if raw.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    let value: Value = serde_json::from_str(raw).map_err(|error| {
        format!("error: the arguments are not valid JSON ({error}); call `{tool}` with a JSON object as its schema says")
    })?;
    // Some models encode the arguments twice: a JSON string holding the object.
    let value = match value {
        Value::String(inner) => serde_json::from_str(&inner).unwrap_or(Value::String(inner)),
        other => other,
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(format!(
            "error: the arguments of `{tool}` must be a JSON object, as its schema says"
        )),
    }
}

/// What the model reads of a tool's result: its text blocks, other blocks described;
/// a result the server marks as an error starts with `error:`.
fn result_text(result: &CallToolResult) -> String {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(text) => text.text.clone(),
            ContentBlock::Image(image) => {
                format!(
                    "[an image, {}, {} bytes of base64]",
                    image.mime_type,
                    image.data.len()
                )
            }
            ContentBlock::Audio(audio) => {
                format!(
                    "[audio, {}, {} bytes of base64]",
                    audio.mime_type,
                    audio.data.len()
                )
            }
            other => serde_json::to_string(other).unwrap_or_default(),
        })
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let text = if parts.is_empty() {
        "(no output)".to_owned()
    } else {
        parts.join("\n")
    };
    if result.is_error == Some(true) {
        format!("error: {text}")
    } else {
        text
    }
}

/// A call the server could not carry out, or a server that is gone.
fn failure_text(server: &str, error: &ServiceError) -> String {
    match error {
        ServiceError::McpError(data) => {
            format!(
                "error: the MCP server `{server}` refused the call: {}",
                data.message
            )
        }
        other => format!("error: the MCP server `{server}` failed: {other}"),
    }
}

/// Sends SIGKILL to a process group.
fn kill_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The group
    // was made for the server by `process_group(0)`; Linux does not hand out its id
    // again while any process is in it, so at worst it is empty and nothing happens.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The test MCP server, `tests/mcp/shout.sh`, as a spec whose log goes to `log`.
    fn shout(name: &str, log: &Path) -> McpSpec {
        McpSpec {
            command: format!(
                "MCP_LOG={} exec bash {}/tests/mcp/shout.sh",
                log.display(),
                env!("CARGO_MANIFEST_DIR")
            ),
            name: name.to_owned(),
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| line.split(' ').next().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn specs_read_name_equals_command() {
        assert_eq!(
            McpSpec::parse("notes=bash notes.sh --x=1"),
            Ok(McpSpec {
                command: "bash notes.sh --x=1".into(),
                name: "notes".into()
            })
        );
        for bad in ["notes", "=cmd", "notes= "] {
            assert_eq!(
                McpSpec::parse(bad),
                Err(format!("expected NAME=COMMAND, got `{bad}`"))
            );
        }
    }

    #[test]
    fn a_server_is_started_its_tools_offered_and_called_and_it_is_stopped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("mcp.log");
        let (mut servers, starts) =
            McpServers::start(&[shout("loud", &log)], dir.path(), Duration::from_secs(10));
        assert_eq!(
            starts,
            [McpStart {
                error: None,
                server: "loud".into(),
                tools: vec!["loud__shout".into(), "loud__fail".into()]
            }]
        );
        assert_eq!(
            servers.declarations()[0],
            json!({"type": "function", "function": {
                "name": "loud__shout",
                "description": "Repeat a text in capitals",
                "parameters": {"type": "object", "required": ["text"], "properties": {
                    "text": {"type": "string", "description": "What to shout"}
                }}
            }})
        );
        assert_eq!(
            servers.describe(),
            "- loud__shout(text): Repeat a text in capitals\n- loud__fail(): Always fails\n"
        );
        let text = |servers: &McpServers, name: &str, arguments: &str| {
            servers.call(name, arguments).map(|o| o.text)
        };
        assert_eq!(
            text(&servers, "loud__shout", r#"{"text": "hello"}"#).as_deref(),
            Some("HELLO!")
        );
        // Arguments encoded twice are read too.
        assert_eq!(
            text(&servers, "loud__shout", r#""{\"text\": \"again\"}""#).as_deref(),
            Some("AGAIN!")
        );
        assert_eq!(
            text(&servers, "loud__fail", "").as_deref(),
            Some("error: the fail tool always fails")
        );
        assert_eq!(
            text(&servers, "loud__shout", r#"{"text": "#).as_deref(),
            Some(
                "error: the arguments are not valid JSON (EOF while parsing a value at line 1 \
                 column 9); call `loud__shout` with a JSON object as its schema says"
            )
        );
        assert_eq!(
            text(&servers, "loud__shout", "[1]").as_deref(),
            Some("error: the arguments of `loud__shout` must be a JSON object, as its schema says")
        );
        assert_eq!(text(&servers, "shout", "{}"), None);
        assert_eq!(lines(&log), ["started", "call", "call", "call"]);
        servers.stop();
        assert_eq!(lines(&log), ["started", "call", "call", "call", "stopped"]);
        // Stopped, its tools answer that it is gone.
        assert_eq!(
            text(&servers, "loud__shout", r#"{"text": "hello"}"#).as_deref(),
            Some("error: the MCP server `loud` is not running")
        );
    }

    #[test]
    fn a_server_that_does_not_speak_mcp_is_left_out_and_its_group_killed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid_file = dir.path().join("sleeper.pid");
        let spec = McpSpec {
            command: format!(
                "sleep 60 & echo $! > {}; read line; sleep 60",
                pid_file.display()
            ),
            name: "mute".into(),
        };
        let started = Instant::now();
        let (servers, starts) = McpServers::start(&[spec], dir.path(), Duration::from_secs(1));
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            starts,
            [McpStart {
                error: Some("no answer to the MCP handshake within 1s".into()),
                server: "mute".into(),
                tools: Vec::new()
            }]
        );
        assert_eq!(servers.names(), Vec::<&str>::new());
        let sleeper: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid")
            .trim()
            .parse()
            .expect("a pid");
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = || unsafe { libc::kill(sleeper, 0) } == 0 && !zombie(sleeper);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(), "the server's child {sleeper} survived");
    }

    /// Whether a process is a zombie waiting for its reaper.
    fn zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        })
    }

    #[test]
    fn a_command_that_exits_and_a_server_that_dies_are_answers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("mcp.log");
        let gone = McpSpec {
            command: "exit 3".into(),
            name: "gone".into(),
        };
        let (servers, starts) = McpServers::start(
            &[gone, shout("loud", &log)],
            dir.path(),
            Duration::from_secs(10),
        );
        assert_eq!(starts[0].server, "gone");
        assert!(
            starts[0]
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("the MCP handshake failed: ")),
            "{starts:?}"
        );
        assert_eq!(starts[1].tools, ["loud__shout", "loud__fail"]);
        // The server dies behind the agent's back: the call is an error answer.
        let pid: i32 = std::fs::read_to_string(&log)
            .expect("log")
            .lines()
            .find_map(|line| line.strip_prefix("started "))
            .and_then(|pid| pid.trim().parse().ok())
            .expect("the server's pid");
        // SAFETY: plain syscall on a pid this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let answer = servers
            .call("loud__shout", r#"{"text": "hello"}"#)
            .map(|o| o.text)
            .unwrap_or_default();
        assert!(
            answer.starts_with("error: the MCP server `loud` failed: "),
            "{answer}"
        );
    }
}
