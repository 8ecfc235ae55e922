//! `grammar/README.md`, generated from the language's table. A test compares the
//! checked-in file with this output, so the reference cannot drift from the decoder.

use std::fmt::Write;

use super::schema::{Arg, Node, TOP_LEVEL, Times, Ty};

/// The whole reference page.
pub fn markdown() -> String {
    let mut out = String::from(
        "# The playbook language: node reference\n\n\
         <!-- Generated from src/playbook/schema.rs by `OPENMONO_BLESS=1 cargo test grammar`; do not edit. -->\n\n\
         Every node a playbook may contain, with its arguments, properties and children.\n\
         The rules that hold for all of them (KDL v2 syntax, names, paths, references and\n\
         the order of steps) are in [rules.md](rules.md); a guided tour is in\n\
         [the book](../book/src/language.md).\n\n\
         <!-- ANCHOR: reference (the book includes what follows) -->\n\n\
         | Node | Meaning |\n| --- | --- |\n",
    );
    for node in TOP_LEVEL {
        let _ = writeln!(out, "| [`{0}`](#{0}) | {1} |", node.name, node.doc);
    }
    for node in TOP_LEVEL {
        section(&mut out, node, &[]);
    }
    out.push_str("\n<!-- ANCHOR_END: reference -->\n");
    out
}

fn section(out: &mut String, node: &Node, path: &[&str]) {
    let mut full: Vec<&str> = path.to_vec();
    full.push(node.name);
    let title = full.join(" › ");
    let _ = writeln!(
        out,
        "\n## {title}\n\n{}.\n\n`{}`",
        capitalize(node.doc),
        usage(node)
    );
    if !node.example.is_empty() {
        let _ = writeln!(out, "\nExample: `{}`", node.example);
    }
    if !node.args.is_empty() || node.rest.is_some() {
        out.push_str("\n| Argument | Type | Meaning |\n| --- | --- | --- |\n");
        for arg in node.args {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                arg.name,
                ty(arg.ty),
                or_dash(arg.doc)
            );
        }
        if let Some(rest) = &node.rest {
            let _ = writeln!(
                out,
                "| `{}…` | {}, one or more | {} |",
                rest.name,
                ty(rest.ty),
                or_dash(rest.doc)
            );
        }
    }
    if !node.props.is_empty() {
        out.push_str("\n| Property | Type | Default | Meaning |\n| --- | --- | --- | --- |\n");
        for prop in node.props {
            let _ = writeln!(
                out,
                "| `{}=` | {} | {} | {} |",
                prop.name,
                ty(prop.ty),
                prop.default
                    .map_or_else(|| "—".to_owned(), |d| format!("`{d}`")),
                prop.doc
            );
        }
    }
    if !node.children.is_empty() {
        out.push_str("\n| Child | Arguments | How often | Meaning |\n| --- | --- | --- | --- |\n");
        for child in node.children {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                child.name,
                args_summary(child),
                times(child.times),
                child.doc
            );
        }
    }
    for child in node.children {
        if !child.props.is_empty() || !child.children.is_empty() {
            section(out, child, &full);
        }
    }
}

/// `container NAME { … }`
fn usage(node: &Node) -> String {
    let mut parts = vec![node.name.to_owned()];
    parts.extend(node.args.iter().map(|a| a.name.to_uppercase()));
    if let Some(rest) = &node.rest {
        parts.push(format!("{}…", rest.name.to_uppercase()));
    }
    parts.extend(node.props.iter().map(|p| format!("[{}=…]", p.name)));
    if !node.children.is_empty() {
        parts.push("{ … }".to_owned());
    }
    parts.join(" ")
}

fn args_summary(node: &Node) -> String {
    let mut parts: Vec<String> = node.args.iter().map(|a: &Arg| ty(a.ty)).collect();
    if let Some(rest) = &node.rest {
        parts.push(format!("{}, one or more", ty(rest.ty)));
    }
    for prop in node.props {
        parts.push(format!("`{}=`", prop.name));
    }
    if parts.is_empty() {
        "—".to_owned()
    } else {
        parts.join("; ")
    }
}

fn ty(ty: Ty) -> String {
    match ty {
        Ty::Bool => "boolean (`#true`, `#false`)".to_owned(),
        Ty::Choice(choices) => choices
            .iter()
            .map(|c| format!("`\"{c}\"`"))
            .collect::<Vec<_>>()
            .join(" or "),
        Ty::Scalar => "string, integer or boolean".to_owned(),
        Ty::Set(names) => format!(
            "one or more of {}, separated by spaces",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Ty::Duration => "duration (`90s`, `30m`, `1h30m`; `1ms` to `168h`)".to_owned(),
        Ty::Size => "size (`512MiB`, `4GiB`; at most `1024TiB`)".to_owned(),
        Ty::Int { max, min } => format!("integer, {min} to {max}"),
        Ty::Name => "name".to_owned(),
        Ty::Path => "path".to_owned(),
        Ty::Ref(kind) => format!("{kind} name"),
        Ty::String => "string".to_owned(),
        Ty::Text => "string, not empty".to_owned(),
        Ty::Image => {
            "image reference (`name[:tag][@digest]`, e.g. `openmono/agent:latest`)".to_owned()
        }
    }
}

fn times(times: Times) -> &'static str {
    match times {
        Times::Many => "any number; they add up",
        Times::Once => "at most once",
        Times::Required => "exactly once",
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "—" } else { text }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}
