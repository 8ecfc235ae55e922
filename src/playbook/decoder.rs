//! KDL document → typed [`Playbook`]. The decoder records every problem and keeps going
//! (substituting nothing for what is wrong), so a user sees all mistakes of a file at once.
//!
//! Methods named `decode_*` turn one node kind into its struct; `arg`/`prop` helpers read
//! one value and report a typed error when it is not what the grammar says.

use std::collections::HashMap;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use super::{
    Container, DEFAULT_CONTEXT, DEFAULT_MAX_STEPS, DEFAULT_MODEL_IMAGE, DecodeError, Model,
    Network, Playbook, Source, Spanned, Task, TaskKind,
};

/// Top-level node names, in the order the grammar lists them.
const TOP_LEVEL: &[&str] = &["playbook", "network", "model", "container", "task"];

/// Decodes one parsed document, collecting problems in `errors`.
pub struct Decoder<'a> {
    errors: Vec<DecodeError>,
    /// First definition of each name, per namespace, for duplicate reports.
    seen: HashMap<(&'static str, String), SourceSpan>,
    source: &'a Source,
}

impl<'a> Decoder<'a> {
    pub fn new(source: &'a Source) -> Self {
        Self {
            errors: Vec::new(),
            seen: HashMap::new(),
            source,
        }
    }

    /// Parses and decodes the source; every problem comes back at once.
    pub fn decode(mut self) -> Result<Playbook, Vec<DecodeError>> {
        let doc = match KdlDocument::parse_v2(&self.source.text) {
            Ok(doc) => doc,
            Err(err) => {
                let text = &self.source.text;
                return Err(err
                    .diagnostics
                    .into_iter()
                    .map(|d| syntax_error(text, d))
                    .collect());
            }
        };
        let mut playbook = Playbook {
            containers: Vec::new(),
            description: None,
            models: Vec::new(),
            name: self.source.path.file_stem().map_or_else(
                || "playbook".to_owned(),
                |s| s.to_string_lossy().into_owned(),
            ),
            networks: Vec::new(),
            source: self.source.clone(),
            tasks: Vec::new(),
        };
        let mut header: Option<SourceSpan> = None;
        for node in doc.nodes() {
            match node.name().value() {
                "playbook" => {
                    if let Some(first) = header {
                        self.errors.push(DecodeError::Duplicate {
                            kind: "playbook header",
                            name: "playbook".into(),
                            span: node.name().span(),
                            first,
                        });
                    }
                    header = Some(node.name().span());
                    self.decode_header(node, &mut playbook);
                }
                "network" => {
                    if let Some(n) = self.decode_network(node) {
                        playbook.networks.push(n);
                    }
                }
                "model" => {
                    if let Some(m) = self.decode_model(node) {
                        playbook.models.push(m);
                    }
                }
                "container" => {
                    if let Some(c) = self.decode_container(node) {
                        playbook.containers.push(c);
                    }
                }
                "task" => {
                    if let Some(t) = self.decode_task(node) {
                        playbook.tasks.push(t);
                    }
                }
                other => self.unknown_node(node, other, "at the top level", TOP_LEVEL),
            }
        }
        if self.errors.is_empty() {
            Ok(playbook)
        } else {
            Err(self.errors)
        }
    }

    fn decode_header(&mut self, node: &KdlNode, playbook: &mut Playbook) {
        self.props(node, &[]);
        if let Some(name) = self.name_arg(node, "playbook") {
            playbook.name = name.value;
        }
        for child in children(node) {
            match child.name().value() {
                "description" => playbook.description = self.string_child(child).map(|s| s.value),
                other => self.unknown_node(child, other, "in `playbook`", &["description"]),
            }
        }
    }

    fn decode_network(&mut self, node: &KdlNode) -> Option<Network> {
        self.props(node, &[]);
        let name = self.name_arg(node, "network")?;
        self.define("network", &name);
        for child in children(node) {
            self.unknown_node(child, child.name().value(), "in `network`", &[]);
        }
        Some(Network { name })
    }

    fn decode_model(&mut self, node: &KdlNode) -> Option<Model> {
        self.props(node, &[]);
        let name = self.name_arg(node, "model");
        let (mut context, mut gguf, mut image, mut network) = (None, None, None, None);
        let mut args = Vec::new();
        for child in children(node) {
            match child.name().value() {
                "args" => args.extend(self.string_list(child, "at least one argument")),
                "context" => context = self.int_child(child, 1, 1 << 24),
                "gguf" => gguf = self.string_child(child),
                "image" => image = self.string_child(child),
                "network" => network = self.string_child(child),
                other => self.unknown_node(
                    child,
                    other,
                    "in `model`",
                    &["gguf", "context", "image", "network", "args"],
                ),
            }
        }
        let name = name?;
        self.define("host", &name);
        let owner = format!("model `{}`", name.value);
        let gguf = self.require(gguf, node, &owner, "gguf", || {
            "add `gguf \"path/to/model.gguf\"`: a GGUF file, relative to the playbook".into()
        });
        let network = self.require(network, node, &owner, "network", || {
            "a model serves only its own network: add `network \"sandbox\"`".into()
        });
        let (gguf, network) = (gguf?, network?);
        Some(Model {
            args,
            context: context.map_or(DEFAULT_CONTEXT, |c| c.value),
            gguf,
            image: image.unwrap_or_else(|| {
                Spanned::new(DEFAULT_MODEL_IMAGE.to_owned(), node.name().span())
            }),
            name,
            network,
        })
    }

    fn decode_container(&mut self, node: &KdlNode) -> Option<Container> {
        self.props(node, &[]);
        let name = self.name_arg(node, "container");
        let (mut image, mut network, mut workspace) = (None, None, None);
        for child in children(node) {
            match child.name().value() {
                "image" => image = self.string_child(child),
                "network" => network = self.string_child(child),
                "workspace" => workspace = self.string_child(child),
                other => self.unknown_node(
                    child,
                    other,
                    "in `container`",
                    &["image", "network", "workspace"],
                ),
            }
        }
        let name = name?;
        self.define("host", &name);
        let image = self.require(
            image,
            node,
            &format!("container `{}`", name.value),
            "image",
            || "add `image \"openmono/agent:latest\"` (built by `images/setup`)".into(),
        )?;
        Some(Container {
            image,
            name,
            network,
            workspace,
        })
    }

    fn decode_task(&mut self, node: &KdlNode) -> Option<Task> {
        let props = self.props(node, &["after"]);
        let mut after: Vec<Spanned<String>> = props
            .get("after")
            .and_then(|e| self.string_value(e))
            .into_iter()
            .collect();
        let name = self.name_arg(node, "task");
        let (mut kind, mut kind_span): (Option<TaskKind>, Option<SourceSpan>) = (None, None);
        let (mut prompt, mut max_steps) = (None, None);
        let mut agent_model = None;
        for child in children(node) {
            let child_name = child.name().value();
            match child_name {
                "after" => after.extend(self.string_list(child, "at least one task name")),
                "agent" | "run" => {
                    if let (Some(first), Some(task)) = (kind_span, &name) {
                        self.errors.push(DecodeError::TaskKindConflict {
                            first,
                            span: child.name().span(),
                            task: task.value.clone(),
                        });
                        continue;
                    }
                    kind_span = Some(child.name().span());
                    if child_name == "agent" {
                        let (container, model) = self.decode_agent(child);
                        agent_model = model;
                        // Filled in below, once the prompt is known.
                        kind = container.map(|container| TaskKind::Agent {
                            container,
                            max_steps: DEFAULT_MAX_STEPS,
                            model: Spanned::new(String::new(), child.span()),
                            prompt: Spanned::new(String::new(), child.span()),
                        });
                    } else {
                        kind = self.decode_run(child);
                    }
                }
                "max-steps" => max_steps = self.int_child(child, 1, 10_000),
                "prompt" => prompt = self.string_child(child),
                other => self.unknown_node(
                    child,
                    other,
                    "in `task`",
                    &["agent", "run", "prompt", "max-steps", "after"],
                ),
            }
        }
        let name = name?;
        self.define("task", &name);
        let owner = format!("task `{}`", name.value);
        let kind = match kind {
            Some(TaskKind::Agent { container, .. }) => {
                let prompt = self.require(prompt, node, &owner, "prompt", || {
                    "tell the agent what to do: `prompt \"Make the tests pass\"`".into()
                })?;
                TaskKind::Agent {
                    container,
                    max_steps: max_steps.map_or(DEFAULT_MAX_STEPS, |m| m.value),
                    model: agent_model?,
                    prompt,
                }
            }
            Some(run @ TaskKind::Run { .. }) => {
                for (value, what) in [
                    (prompt.map(|p| p.span), "prompt"),
                    (max_steps.map(|m| m.span), "max-steps"),
                ] {
                    if let Some(span) = value {
                        self.errors.push(DecodeError::InvalidValue {
                            help: Some(format!("`{what}` belongs to agent tasks; remove it")),
                            message: format!("`{what}` has no meaning for a `run` task"),
                            span,
                        });
                    }
                }
                run
            }
            None => {
                if kind_span.is_none() {
                    self.errors.push(DecodeError::MissingChild {
                        child: "agent` or `run",
                        help: Some(
                            "say what the task does: `agent \"box\" model=\"coder\"` or `run \"box\" \"make test\"`"
                                .into(),
                        ),
                        owner,
                        span: node.name().span(),
                    });
                }
                return None;
            }
        };
        Some(Task { after, kind, name })
    }

    /// `agent "box" model="coder"`: the container and the model.
    fn decode_agent(
        &mut self,
        node: &KdlNode,
    ) -> (Option<Spanned<String>>, Option<Spanned<String>>) {
        let props = self.props(node, &["model"]);
        self.no_children(node);
        let container = self.name_arg(node, "agent");
        let model = props.get("model").and_then(|e| self.string_value(e));
        if !props.contains_key("model") {
            self.errors.push(DecodeError::MissingArgument {
                expected: "a `model=` property".into(),
                help: Some(
                    "name the model the agent talks to: `agent \"box\" model=\"coder\"`".into(),
                ),
                node: "agent".into(),
                span: node.span(),
            });
        }
        (container, model)
    }

    fn decode_run(&mut self, node: &KdlNode) -> Option<TaskKind> {
        self.props(node, &[]);
        self.no_children(node);
        let args = positional(node);
        if args.len() < 2 {
            self.missing_arg(
                node,
                "a container and a command: `run \"box\" \"make test\"`",
            );
            return None;
        }
        for extra in &args[2..] {
            self.errors.push(DecodeError::ExtraArgument {
                expected: "two arguments, a container and a command".into(),
                help: Some("quote the whole command as one string".into()),
                node: "run".into(),
                span: extra.span(),
            });
        }
        let container = self.string_value(args[0]);
        let command = self.string_value(args[1]);
        Some(TaskKind::Run {
            command: command?,
            container: container?,
        })
    }

    /// Records `name` in `namespace`, reporting a duplicate with both places.
    fn define(&mut self, namespace: &'static str, name: &Spanned<String>) {
        let key = (namespace, name.value.clone());
        if let Some(first) = self.seen.get(&key) {
            self.errors.push(DecodeError::Duplicate {
                kind: match namespace {
                    "host" => "model or container",
                    other => other,
                },
                name: name.value.clone(),
                span: name.span,
                first: *first,
            });
        } else {
            self.seen.insert(key, name.span);
        }
    }

    fn require<T>(
        &mut self,
        value: Option<T>,
        node: &KdlNode,
        owner: &str,
        child: &'static str,
        help: impl FnOnce() -> String,
    ) -> Option<T> {
        if value.is_none() {
            self.errors.push(DecodeError::MissingChild {
                child,
                help: Some(help()),
                owner: owner.to_owned(),
                span: node.name().span(),
            });
        }
        value
    }

    /// The single string argument that names a resource.
    fn name_arg(&mut self, node: &KdlNode, what: &str) -> Option<Spanned<String>> {
        let args = positional(node);
        let Some(first) = args.first() else {
            self.missing_arg(node, &format!("a name: `{what} \"name\"`"));
            return None;
        };
        for extra in &args[1..] {
            self.errors.push(DecodeError::ExtraArgument {
                expected: "one argument, its name".into(),
                help: None,
                node: node.name().value().to_owned(),
                span: extra.span(),
            });
        }
        let name = self.string_value(first)?;
        let mut chars = name.value.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            self.errors.push(DecodeError::InvalidValue {
                help: Some(
                    "use letters, digits, `-` and `_`, starting with a letter or digit".into(),
                ),
                message: format!("`{}` is not a valid name", name.value),
                span: name.span,
            });
            return None;
        }
        Some(name)
    }

    /// A child like `after "a" "b"`: one or more strings, nothing else.
    fn string_list(&mut self, node: &KdlNode, expected: &str) -> Vec<Spanned<String>> {
        self.props(node, &[]);
        self.no_children(node);
        let args = positional(node);
        if args.is_empty() {
            self.missing_arg(node, expected);
        }
        args.into_iter()
            .filter_map(|e| self.string_value(e))
            .collect()
    }

    /// A child like `image "x"`: exactly one string argument, nothing else.
    fn string_child(&mut self, node: &KdlNode) -> Option<Spanned<String>> {
        self.single_arg(node).and_then(|e| self.string_value(e))
    }

    /// A child like `context 4096`: exactly one integer in `min..=max`.
    fn int_child(&mut self, node: &KdlNode, min: u32, max: u32) -> Option<Spanned<u32>> {
        let entry = self.single_arg(node)?;
        let KdlValue::Integer(n) = entry.value() else {
            self.wrong_type(entry, "an integer");
            return None;
        };
        match u32::try_from(*n) {
            Ok(v) if (min..=max).contains(&v) => Some(Spanned::new(v, entry.span())),
            _ => {
                self.errors.push(DecodeError::InvalidValue {
                    help: Some(format!("use a number from {min} to {max}")),
                    message: format!("`{}` is out of range", node.name().value()),
                    span: entry.span(),
                });
                None
            }
        }
    }

    fn single_arg<'n>(&mut self, node: &'n KdlNode) -> Option<&'n KdlEntry> {
        self.props(node, &[]);
        self.no_children(node);
        let args = positional(node);
        let name = node.name().value();
        for extra in args.iter().skip(1) {
            self.errors.push(DecodeError::ExtraArgument {
                expected: "one argument".into(),
                help: None,
                node: name.to_owned(),
                span: extra.span(),
            });
        }
        if args.is_empty() {
            self.missing_arg(node, "one argument");
        }
        args.first().copied()
    }

    fn string_value(&mut self, entry: &KdlEntry) -> Option<Spanned<String>> {
        if let KdlValue::String(s) = entry.value() {
            Some(Spanned::new(s.clone(), entry.span()))
        } else {
            self.wrong_type(entry, "a string");
            None
        }
    }

    /// The node's properties, unknown ones reported. A repeated property: the last wins.
    fn props<'n>(&mut self, node: &'n KdlNode, allowed: &[&str]) -> HashMap<&'n str, &'n KdlEntry> {
        let mut found = HashMap::new();
        for entry in node.entries() {
            let Some(name) = entry.name() else { continue };
            if allowed.contains(&name.value()) {
                found.insert(name.value(), entry);
            } else {
                self.errors.push(DecodeError::UnknownProperty {
                    help: Some(suggest(name.value(), allowed).unwrap_or_else(|| {
                        if allowed.is_empty() {
                            format!("`{}` takes no properties", node.name().value())
                        } else {
                            format!("`{}` takes: {}", node.name().value(), list(allowed))
                        }
                    })),
                    name: name.value().to_owned(),
                    node: node.name().value().to_owned(),
                    span: entry.span(),
                });
            }
        }
        found
    }

    fn no_children(&mut self, node: &KdlNode) {
        for child in children(node) {
            self.unknown_node(
                child,
                child.name().value(),
                &format!("in `{}`", node.name().value()),
                &[],
            );
        }
    }

    fn unknown_node(&mut self, node: &KdlNode, name: &str, place: &str, known: &[&str]) {
        let help = suggest(name, known).or_else(|| {
            if known.is_empty() {
                Some(format!("nothing goes {place}"))
            } else {
                Some(format!("expected one of: {}", list(known)))
            }
        });
        self.errors.push(DecodeError::UnknownNode {
            help,
            name: name.to_owned(),
            place: place.to_owned(),
            span: node.name().span(),
        });
    }

    fn missing_arg(&mut self, node: &KdlNode, expected: &str) {
        self.errors.push(DecodeError::MissingArgument {
            expected: expected.to_owned(),
            help: None,
            node: node.name().value().to_owned(),
            span: node.name().span(),
        });
    }

    fn wrong_type(&mut self, entry: &KdlEntry, expected: &'static str) {
        let value = entry.value();
        let help = match value {
            KdlValue::Integer(_) | KdlValue::Float(_) if expected == "a string" => {
                Some(format!("quote it: `\"{value}\"`"))
            }
            _ => None,
        };
        self.errors.push(DecodeError::WrongType {
            expected,
            found: type_name(value),
            help,
            span: entry.span(),
        });
    }
}

fn positional(node: &KdlNode) -> Vec<&KdlEntry> {
    node.entries()
        .iter()
        .filter(|e| e.name().is_none())
        .collect()
}

fn children(node: &KdlNode) -> impl Iterator<Item = &KdlNode> {
    node.children().into_iter().flat_map(KdlDocument::nodes)
}

fn type_name(value: &KdlValue) -> &'static str {
    match value {
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Float(_) => "a number",
        KdlValue::Integer(_) => "an integer",
        KdlValue::Null => "#null",
        KdlValue::String(_) => "a string",
    }
}

/// "did you mean `x`?" for a name close to one the grammar knows.
fn suggest(name: &str, known: &[&str]) -> Option<String> {
    closest(name, known.iter().copied()).map(|k| format!("did you mean `{k}`?"))
}

/// The known name closest to `name`, if it is close enough to be a typo: at most two
/// edits, and fewer for short names, so that `zz` does not suggest `s`.
pub fn closest<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let limit = (name.chars().count() / 3).clamp(1, 2);
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn syntax_error(text: &str, diag: kdl::KdlDiagnostic) -> DecodeError {
    let start = diag.span.offset();
    let word: String = text
        .get(start..)
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    // KDL v1 wrote keywords bare; v2 needs the `#`.
    let v1_habit = matches!(word.as_str(), "true" | "false" | "null")
        .then(|| format!("KDL v2 writes this keyword with a `#`: `#{word}`"));
    DecodeError::Syntax {
        help: v1_habit.or(diag.help),
        label: diag.label.unwrap_or_else(|| "here".into()),
        message: diag
            .message
            .unwrap_or_else(|| "this is not valid KDL v2".into()),
        span: diag.span,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn decode(text: &str) -> Result<Playbook, Vec<DecodeError>> {
        let source = Source::from_text(Path::new("t.kdl"), PathBuf::from("/p"), text.to_owned());
        Decoder::new(&source).decode()
    }

    /// The span of the `nth` occurrence of `needle` in `text`.
    fn span_of(text: &str, needle: &str, nth: usize) -> SourceSpan {
        let offset = text.match_indices(needle).nth(nth).expect("needle").0;
        (offset, needle.len()).into()
    }

    /// Decodes `text` and expects exactly one error; returns it.
    #[track_caller]
    fn one_error(text: &str) -> DecodeError {
        let mut errors = decode(text).expect_err("should fail");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.remove(0)
    }

    /// One error of this kind, with a label on the `nth` occurrence of `needle`.
    macro_rules! error {
        ($name:ident, $text:expr, $pattern:pat, $needle:expr) => {
            error!($name, $text, $pattern, $needle, 0);
        };
        ($name:ident, $text:expr, $pattern:pat, $needle:expr, $nth:expr) => {
            #[test]
            fn $name() {
                let text = $text;
                let error = one_error(text);
                assert!(matches!(error, $pattern), "{error:#?}");
                let labels: Vec<SourceSpan> = miette::Diagnostic::labels(&error)
                    .expect("labels")
                    .map(|l| *l.inner())
                    .collect();
                assert!(labels.contains(&span_of(text, $needle, $nth)), "{error:#?}");
            }
        };
    }

    #[test]
    fn a_whole_playbook_with_defaults_filled_in() {
        let playbook = decode(
            r#"playbook "demo" {
    description "d"
}
network "n"
model "m" {
    gguf "m.gguf"
    network "n"
    args "--flag" "x"
}
container "c" {
    image "img"
    network "n"
    workspace "."
}
task "a" {
    agent "c" model="m"
    prompt "go"
}
task "b" after="a" {
    run "c" "make"
    after "a"
}
"#,
        )
        .expect("decodes");
        assert_eq!(playbook.name, "demo");
        assert_eq!(playbook.description.as_deref(), Some("d"));
        let model = &playbook.models[0];
        assert_eq!(model.context, DEFAULT_CONTEXT);
        assert_eq!(model.image.value, DEFAULT_MODEL_IMAGE);
        let args: Vec<&str> = model.args.iter().map(|a| a.value.as_str()).collect();
        assert_eq!(args, ["--flag", "x"]);
        assert_eq!(
            playbook.containers[0]
                .workspace
                .as_ref()
                .map(|w| w.value.as_str()),
            Some(".")
        );
        match &playbook.tasks[0].kind {
            TaskKind::Agent {
                max_steps,
                model,
                prompt,
                ..
            } => {
                assert_eq!(*max_steps, DEFAULT_MAX_STEPS);
                assert_eq!(model.value, "m");
                assert_eq!(prompt.value, "go");
            }
            TaskKind::Run { .. } => panic!("an agent task"),
        }
        let after: Vec<&str> = playbook.tasks[1]
            .after
            .iter()
            .map(|a| a.value.as_str())
            .collect();
        assert_eq!(after, ["a", "a"]);
    }

    error!(
        a_model_needs_a_network,
        "model \"m\" {\n    gguf \"x\"\n}",
        DecodeError::MissingChild {
            child: "network",
            ..
        },
        "model"
    );

    #[test]
    fn the_name_defaults_to_the_file_stem() {
        assert_eq!(decode("network \"n\"").expect("decodes").name, "t");
    }

    #[test]
    fn crlf_line_endings_never_reach_a_value() {
        let text = "container \"c\" {\r\n    image \"i\"\r\n}\r\ntask \"t\" {\r\n    run \"c\" \"\"\"\r\n        echo a\r\n        echo b\r\n        \"\"\"\r\n}\r\n";
        let playbook = decode(text).expect("decodes");
        let TaskKind::Run { command, .. } = &playbook.tasks[0].kind else {
            panic!("a run task")
        };
        assert_eq!(command.value, "echo a\necho b");
    }

    error!(
        unknown_top_level_node,
        "netwrk \"n\"",
        DecodeError::UnknownNode { .. },
        "netwrk"
    );
    error!(
        unknown_property_on_a_network,
        "network \"n\" egres=#true",
        DecodeError::UnknownProperty { .. },
        "egres=#true"
    );
    error!(
        context_must_be_an_integer,
        "model \"m\" {\n    gguf \"x\"\n    network \"n\"\n    context \"big\"\n}",
        DecodeError::WrongType {
            expected: "an integer",
            ..
        },
        "\"big\""
    );
    error!(
        context_out_of_range,
        "model \"m\" {\n    gguf \"x\"\n    network \"n\"\n    context 0\n}",
        DecodeError::InvalidValue { .. },
        "0"
    );
    error!(
        a_second_image_argument,
        "container \"c\" {\n    image \"a\" \"b\"\n}",
        DecodeError::ExtraArgument { .. },
        "\"b\""
    );
    error!(
        a_duplicate_labels_the_second_definition,
        "network \"n\"\nnetwork \"n\"",
        DecodeError::Duplicate { .. },
        "\"n\"",
        1
    );
    error!(
        a_run_task_needs_a_command,
        "task \"t\" {\n    run \"c\"\n}",
        DecodeError::MissingArgument { .. },
        "run"
    );
    error!(
        a_task_cannot_be_both_kinds,
        "task \"t\" {\n    run \"c\" \"x\"\n    agent \"c\" model=\"m\"\n}",
        DecodeError::TaskKindConflict { .. },
        "agent"
    );
    error!(
        a_task_needs_a_kind,
        "task \"t\" {\n    prompt \"p\"\n}",
        DecodeError::MissingChild { .. },
        "task"
    );
    error!(
        names_are_restricted,
        "network \"a b\"",
        DecodeError::InvalidValue { .. },
        "\"a b\""
    );
    error!(
        prompt_means_nothing_for_a_run_task,
        "task \"t\" {\n    run \"c\" \"x\"\n    prompt \"p\"\n}",
        DecodeError::InvalidValue { .. },
        "\"p\""
    );
    error!(
        a_bare_keyword_is_a_kdl_v1_habit,
        "network \"n\" egress=true",
        DecodeError::Syntax { help: Some(_), .. },
        "true"
    );

    #[test]
    fn duplicate_points_at_both_places() {
        let text = "container \"x\" {\n    image \"i\"\n}\nmodel \"x\" {\n    gguf \"g\"\n    network \"n\"\n}";
        let DecodeError::Duplicate { span, first, .. } = one_error(text) else {
            panic!("a duplicate")
        };
        assert_eq!(first, span_of(text, "\"x\"", 0));
        assert_eq!(span, span_of(text, "\"x\"", 1));
    }
}
