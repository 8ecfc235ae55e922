//! Checks a KDL document against the language's table ([`schema`](super::schema)):
//! known nodes and properties, the number and types of arguments, required children and
//! overrides. It reports everything it finds and changes nothing; the decoder then reads
//! values knowing their shape is right.

use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use super::{
    DecodeError, closest,
    schema::{Node, Times, Ty},
};

/// Walks a document, collecting problems (errors and warnings) in `problems`.
pub struct Checker<'p> {
    pub problems: &'p mut Vec<DecodeError>,
}

impl Checker<'_> {
    /// Checks `nodes`, the children of `owner` (or the top level), against `schemas`.
    pub fn check_nodes(&mut self, nodes: &[KdlNode], schemas: &[Node], owner: Option<&KdlNode>) {
        // Only for messages: not built for every node.
        let place = || {
            owner.map_or_else(
                || "at the top level".to_owned(),
                |o| format!("in `{}`", o.name().value()),
            )
        };
        let mut first: Vec<(&str, SourceSpan)> = Vec::new();
        for node in nodes {
            let name = node.name().value();
            let Some(schema) = schemas.iter().find(|s| s.name == name) else {
                self.unknown_node(node, &place(), schemas);
                continue;
            };
            if matches!(schema.times, Times::Once | Times::Required)
                && let Some(earlier) = record(&mut first, schema.name, node.name().span())
            {
                self.problems.push(DecodeError::Overridden {
                    first: earlier,
                    help: format!("remove one `{name}`: the last one is used"),
                    span: node.name().span(),
                    what: format!("`{name}` {}", place()),
                });
            }
            self.check_node(node, schema);
        }
        if let Some(owner) = owner {
            for schema in schemas.iter().filter(|s| s.times == Times::Required) {
                if !first.iter().any(|(name, _)| *name == schema.name) {
                    self.problems.push(DecodeError::MissingChild {
                        child: schema.name,
                        help: Some(if schema.example.is_empty() {
                            format!("add `{}`: {}", schema.name, schema.doc)
                        } else {
                            format!("add `{}`: {}", schema.example, schema.doc)
                        }),
                        owner: describe(owner),
                        span: owner.name().span(),
                    });
                }
            }
        }
    }

    fn check_node(&mut self, node: &KdlNode, schema: &Node) {
        let mut props: Vec<(&str, SourceSpan)> = Vec::new();
        let mut args = Vec::new();
        for entry in node.entries() {
            let Some(key) = entry.name() else {
                args.push(entry);
                continue;
            };
            let Some(prop) = schema.prop(key.value()) else {
                self.unknown_property(node, entry, schema);
                continue;
            };
            if let Some(earlier) = record(&mut props, prop.name, entry.span()) {
                let opens = prop.name == "egress" && matches!(entry.value(), KdlValue::Bool(true));
                self.problems.push(DecodeError::Overridden {
                    first: earlier,
                    help: if opens {
                        "this override WEAKENS ISOLATION: the network is not internal, and containers on it can reach the internet, the LAN and the host".to_owned()
                    } else {
                        format!("remove one `{}=`: the last one is used", prop.name)
                    },
                    span: entry.span(),
                    what: format!("property `{}` on `{}`", prop.name, schema.name),
                });
            }
            self.check_value(entry, prop.ty);
        }
        self.check_args(node, schema, &args);
        let children = node.children().map_or(&[][..], kdl::KdlDocument::nodes);
        if schema.children.is_empty() {
            for child in children {
                self.problems.push(DecodeError::UnknownNode {
                    help: Some(format!("`{}` has no children", schema.name)),
                    name: child.name().value().to_owned(),
                    place: format!("in `{}`", schema.name),
                    span: child.name().span(),
                });
            }
        } else {
            self.check_nodes(children, schema.children, Some(node));
        }
    }

    fn check_args(&mut self, node: &KdlNode, schema: &Node, args: &[&KdlEntry]) {
        let (least, most) = schema.arity();
        if args.len() < least {
            let missing: Vec<&str> = schema
                .args
                .iter()
                .chain(schema.rest.iter())
                .skip(args.len())
                .map(|a| a.name)
                .collect();
            self.problems.push(DecodeError::MissingArgument {
                expected: expected_args(schema),
                help: Some(match missing.as_slice() {
                    [one] => format!("add the missing argument: {one}"),
                    more => format!("add the missing arguments: {}", more.join(", ")),
                }),
                node: schema.name.to_owned(),
                span: node.name().span(),
            });
        }
        for (i, entry) in args.iter().enumerate() {
            if most.is_some_and(|m| i >= m) {
                self.problems.push(DecodeError::ExtraArgument {
                    expected: expected_args(schema),
                    help: (schema
                        .args
                        .last()
                        .is_some_and(|a| matches!(a.ty, Ty::String | Ty::Text)))
                    .then(|| "quote a value with spaces as one string".to_owned()),
                    node: schema.name.to_owned(),
                    span: entry.span(),
                });
                continue;
            }
            let ty = schema
                .args
                .get(i)
                .or(schema.rest.as_ref())
                .map_or(Ty::String, |a| a.ty);
            self.check_value(entry, ty);
        }
    }

    fn check_value(&mut self, entry: &KdlEntry, ty: Ty) {
        let value = entry.value();
        let expected = match ty {
            Ty::Bool => "a boolean (`#true` or `#false`)",
            Ty::Int { .. } => "an integer",
            Ty::Choice(_)
            | Ty::Image
            | Ty::Name
            | Ty::Path
            | Ty::Ref(_)
            | Ty::String
            | Ty::Text => "a string",
            Ty::Set(_) => "a string of names separated by spaces",
            Ty::Duration => "a duration such as `\"30m\"`",
            Ty::Size => "a size such as `\"4GiB\"`",
            Ty::Scalar => "a string, an integer or a boolean",
        };
        match (ty, value) {
            (Ty::Path | Ty::Ref(_) | Ty::Text, KdlValue::String(s)) if s.trim().is_empty() => {
                self.problems.push(DecodeError::InvalidValue {
                    help: Some("give a value, or leave the node out".into()),
                    message: "this value is empty".into(),
                    span: entry.span(),
                });
            }
            (Ty::Duration | Ty::Size, KdlValue::String(s)) => self.check_quantity(entry, ty, s),
            (Ty::Image, KdlValue::String(s)) => self.check_image(entry, s),
            (Ty::Bool, KdlValue::Bool(_))
            | (Ty::Path | Ty::Ref(_) | Ty::String | Ty::Text, KdlValue::String(_))
            | (Ty::Scalar, KdlValue::String(_) | KdlValue::Integer(_) | KdlValue::Bool(_)) => {}
            (Ty::Set(names), KdlValue::String(s)) => self.check_set(entry, names, s),
            (Ty::Choice(choices), KdlValue::String(s)) => {
                if !choices.contains(&s.as_str()) {
                    self.problems.push(DecodeError::InvalidValue {
                        help: Some(format!(
                            "use one of: {}",
                            choices
                                .iter()
                                .map(|c| format!("`{c}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                        message: format!("`{s}` is not one of the choices"),
                        span: entry.span(),
                    });
                }
            }
            (Ty::Int { max, min }, KdlValue::Integer(n)) => {
                if *n < i128::from(min) || *n > i128::from(max) {
                    self.problems.push(DecodeError::InvalidValue {
                        help: Some(format!("use a number from {min} to {max}")),
                        message: format!("{n} is out of range"),
                        span: entry.span(),
                    });
                }
            }
            (Ty::Name, KdlValue::String(s)) => {
                if !is_name(s) {
                    self.problems.push(DecodeError::InvalidValue {
                        help: Some(format!(
                            "use up to {MAX_NAME} letters, digits, `-` and `_`, starting with a letter or digit"
                        )),
                        message: format!("`{s}` is not a valid name"),
                        span: entry.span(),
                    });
                }
            }
            _ => self.problems.push(DecodeError::WrongType {
                expected,
                found: type_name(value),
                help: match value {
                    KdlValue::Integer(_) | KdlValue::Float(_) if expected == "a string" => {
                        Some(format!("quote it: `\"{value}\"`"))
                    }
                    KdlValue::Float(f) => match ty {
                        Ty::Int { max, min } => Some(
                            match format!("{:.0}", f.round())
                                .parse::<i64>()
                                .ok()
                                .filter(|n| (min..=max).contains(n))
                            {
                                Some(n) => {
                                    format!(
                                        "write a whole number from {min} to {max}, such as `{n}`"
                                    )
                                }
                                None => format!("write a whole number from {min} to {max}"),
                            },
                        ),
                        _ => None,
                    },
                    KdlValue::String(s)
                        if ty == Ty::Bool && matches!(s.as_str(), "true" | "false") =>
                    {
                        Some(format!("KDL v2 writes booleans as `#{s}`"))
                    }
                    _ => None,
                },
                span: entry.span(),
            }),
        }
    }

    /// A duration or a size: well-formed, and within the bounds of [`super::units`].
    fn check_quantity(&mut self, entry: &KdlEntry, ty: Ty, text: &str) {
        use super::units::{MAX_DURATION, MAX_DURATION_SECS, MAX_SIZE, parse_duration, parse_size};
        let (help, message) = if text.contains("{{") {
            (
                "durations and sizes are read before templates are expanded: write the value itself, e.g. `30m` or `4GiB`".to_owned(),
                format!("`{text}` is a template where a {} goes", if ty == Ty::Duration { "duration" } else { "size" }),
            )
        } else if ty == Ty::Duration {
            match parse_duration(text) {
                None => (
                    "write a whole number and a unit: `90s`, `30m`, `1h30m`, `500ms`".to_owned(),
                    format!("`{text}` is not a duration"),
                ),
                Some(d) if d.is_zero() || d > MAX_DURATION => (
                    format!(
                        "use a duration from `1ms` to `{}h` (7 days)",
                        MAX_DURATION_SECS / 3600
                    ),
                    if d.is_zero() {
                        format!("`{text}` is no time at all")
                    } else {
                        format!("`{text}` is too long")
                    },
                ),
                Some(_) => return,
            }
        } else {
            match parse_size(text) {
                None => (
                    "write a whole number and a unit: `512MiB`, `4GiB`, `1G`".to_owned(),
                    format!("`{text}` is not a size"),
                ),
                Some(n) if n > MAX_SIZE => (
                    format!("a size may be at most `{}TiB`", MAX_SIZE >> 40),
                    format!("`{text}` is too large"),
                ),
                // The engine takes 0 as "no limit" and refuses less than 6 MiB.
                Some(n) if n < MIN_MEMORY && entry.name().is_some_and(|p| p.value() == "memory") => (
                    "a container's memory is at least `6MiB` (the engine's least); leave `memory` out for the default, half the engine's".to_owned(),
                    format!("`{text}` is too little memory for a container"),
                ),
                Some(_) => return,
            }
        };
        self.problems.push(DecodeError::InvalidValue {
            help: Some(help),
            message,
            span: entry.span(),
        });
    }

    /// An image reference; a template is judged once rendered, by the engine.
    fn check_image(&mut self, entry: &KdlEntry, text: &str) {
        if text.contains("{{") || is_image_reference(text) {
            return;
        }
        self.problems.push(DecodeError::InvalidValue {
            help: Some(
                "an image reference is `[registry/]name[:tag][@digest]`: the name in lowercase letters and digits, with `.`, `_` or `-` between them and `/` between parts, e.g. `openmono/agent:latest`".into(),
            ),
            message: format!("`{text}` is not an image reference"),
            span: entry.span(),
        });
    }

    /// Names separated by spaces or commas, each one of `names`.
    fn check_set(&mut self, entry: &KdlEntry, names: &[&str], text: &str) {
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            self.problems.push(DecodeError::InvalidValue {
                help: Some(format!("name one or more of: {}", list(names))),
                message: "this value is empty".into(),
                span: entry.span(),
            });
        }
        for word in words.into_iter().filter(|w| !names.contains(w)) {
            self.problems.push(DecodeError::InvalidValue {
                help: Some(closest(word, names.iter().copied()).map_or_else(
                    || format!("use one or more of: {}", list(names)),
                    |k| format!("did you mean `{k}`? The names are: {}", list(names)),
                )),
                message: format!(
                    "`{word}` is not one of the names `{}` takes",
                    entry_name(entry)
                ),
                span: entry.span(),
            });
        }
    }

    fn unknown_node(&mut self, node: &KdlNode, place: &str, schemas: &[Node]) {
        let name = node.name().value();
        let known: Vec<&str> = schemas.iter().map(|s| s.name).collect();
        let help = refused(name).map_or_else(
            || {
                closest(name, known.iter().copied()).map_or_else(
                    || {
                        if known.is_empty() {
                            format!("nothing goes {place}")
                        } else {
                            format!("expected one of: {}", list(&known))
                        }
                    },
                    |k| format!("did you mean `{k}`?"),
                )
            },
            str::to_owned,
        );
        self.problems.push(DecodeError::UnknownNode {
            help: Some(help),
            name: name.to_owned(),
            place: place.to_owned(),
            span: node.name().span(),
        });
    }

    fn unknown_property(&mut self, node: &KdlNode, entry: &KdlEntry, schema: &Node) {
        let name = entry.name().map_or("", |n| n.value());
        let known: Vec<&str> = schema.props.iter().map(|p| p.name).collect();
        let help = closest(name, known.iter().copied()).map_or_else(
            || {
                if known.is_empty() {
                    format!("`{}` takes no properties", schema.name)
                } else {
                    format!("`{}` takes: {}", schema.name, list(&known))
                }
            },
            |k| format!("did you mean `{k}`?"),
        );
        self.problems.push(DecodeError::UnknownProperty {
            help: Some(help),
            name: name.to_owned(),
            node: node.name().value().to_owned(),
            span: entry.span(),
        });
    }
}

/// The least memory a container may be given: the engine refuses less.
const MIN_MEMORY: u64 = 6 << 20;

/// Why the language has no node for what `name` would open the box by, for the names
/// people reach for from Docker and compose.
fn refused(name: &str) -> Option<&'static str> {
    Some(match name {
        "ports" | "port" | "publish" | "expose" => {
            "ports are never published: the box's networks are internal, so a published port would be a way in from outside that bypasses them. To use a server in the box, run its client in the box too (a `run` task, or another container on its network)"
        }
        "privileged" | "cap-add" | "capabilities" | "devices" | "device" => {
            "a box never gets privileges, capabilities or host devices: with them, what runs inside could leave it. A model's GPU comes with `gpu-layers` on the model"
        }
        "network-mode" | "pid" | "ipc" | "host-network" | "userns" => {
            "a box never shares the host's network, PID or IPC namespace: each has its own, which is what keeps it in"
        }
        _ => return None,
    })
}

/// Whether `s` is an image reference the engine takes: `[host[:port]/]path[:tag][@digest]`,
/// each part of the path lowercase letters and digits with `.`, `_`, `__` or `-` runs
/// between them, as the distribution reference grammar says.
pub fn is_image_reference(s: &str) -> bool {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    let digest_ok = digest.is_none_or(|d| {
        d.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        })
    });
    // A `:` after the last `/` starts the tag; one before it is a registry's port.
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (rest, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    });
    let mut parts: Vec<&str> = name.split('/').collect();
    let host = parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost");
    if host {
        let registry = parts.remove(0);
        let (domain, port) = registry.split_once(':').unwrap_or((registry, "1"));
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
            || port.is_empty()
            || !port.chars().all(|c| c.is_ascii_digit())
        {
            return false;
        }
    }
    let path_ok = name.len() <= 255 && parts.iter().all(|part| path_component(part));
    digest_ok && tag_ok && path_ok
}

/// One part of an image's path: `[a-z0-9]+` runs joined by `.`, `_`, `__` or `-`s.
fn path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &part[start..i];
        if !(separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-'))
        {
            return false;
        }
    }
    true
}

/// The longest name: names become host names on networks (a DNS label is at most 63
/// bytes) and file names in the run's folder.
pub const MAX_NAME: usize = 63;

/// Letters, digits, `-` and `_`, starting with a letter or digit, at most [`MAX_NAME`].
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_NAME
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// "container `box`" for a node whose first argument is its name.
/// Records `span` as the latest place of `name` and returns the one before, if any: a
/// map for the handful of names of one node, where a `HashMap` costs more than it saves.
fn record<'s>(
    seen: &mut Vec<(&'s str, SourceSpan)>,
    name: &'s str,
    span: SourceSpan,
) -> Option<SourceSpan> {
    if let Some((_, latest)) = seen.iter_mut().find(|(seen, _)| *seen == name) {
        return Some(std::mem::replace(latest, span));
    }
    seen.push((name, span));
    None
}

pub fn describe(node: &KdlNode) -> String {
    match node
        .entries()
        .iter()
        .find(|e| e.name().is_none())
        .map(KdlEntry::value)
    {
        Some(KdlValue::String(name)) => format!("{} `{name}`", node.name().value()),
        _ => format!("`{}`", node.name().value()),
    }
}

fn expected_args(schema: &Node) -> String {
    let mut names: Vec<String> = schema.args.iter().map(|a| a.name.to_owned()).collect();
    if let Some(rest) = &schema.rest {
        names.push(format!("one or more {}", rest.name));
    }
    match names.len() {
        0 => "no arguments".to_owned(),
        1 => format!("one argument: {}", names[0]),
        n => format!("{n} arguments: {}", names.join(", ")),
    }
}

/// `allow` for a property, `value` for an argument.
fn entry_name(entry: &KdlEntry) -> &str {
    entry.name().map_or("value", |n| n.value())
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

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::is_image_reference;

    #[test]
    fn image_references_as_the_engine_takes_them() {
        for good in [
            "openmono/agent:latest",
            "debian",
            "debian:12",
            "localhost:5000/team/tool:v1.2_3",
            "registry.example.com/a/b-c__d.e",
            "tool@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "my--tool:1",
        ] {
            assert!(is_image_reference(good), "{good}");
        }
        for bad in [
            "Bad Image!!",
            "openmono/agent:",
            "Openmono/agent",
            "agent:.hidden",
            "a//b",
            "-a",
            "a-",
            "a@sha256:xyz",
            "host:port/x",
            "a:b:c",
            "",
        ] {
            assert!(!is_image_reference(bad), "{bad}");
        }
    }
}
