//! Vars and templates: resolves each `var` (from `--var`, `OPENMONO_VAR_…` or its
//! default), then renders every templated string of the playbook with minijinja, in
//! strict mode, so an undefined name is an error that points at it. The host's
//! environment is not visible to templates: only what a `var` takes in.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use miette::SourceSpan;
use minijinja::{Environment, UndefinedBehavior, Value};

use super::{HealthProbe, Playbook, Spanned, TaskKind, TemplateError, VarType, VarValue, closest};
use crate::plan::model_url;

/// How much work one template may do (minijinja's fuel: roughly, instructions).
const FUEL: u64 = 100_000;
/// The most text one template may produce.
const MAX_OUTPUT: usize = 1 << 20;

/// Renders one template, stopping it once its output passes [`MAX_OUTPUT`].
fn render_one(
    env: &Environment,
    template: &str,
    context: &Value,
) -> Result<String, minijinja::Error> {
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + bytes.len() > MAX_OUTPUT {
                return Err(std::io::Error::other("the template's output passes 1 MiB"));
            }
            self.0.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::new());
    env.template_from_str(template)?
        .render_captured_to(context, &mut out)?;
    Ok(String::from_utf8_lossy(&out.0).into_owned())
}

/// What a run brings to its templates from outside the playbook.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Where a relative path given as a var's value is resolved.
    pub cwd: PathBuf,
    /// The run's id (`plan` shows a placeholder).
    pub run_id: String,
    /// `OPENMONO_VAR_NAME` values from the environment, by NAME. One that names no
    /// var is ignored (it may be meant for another playbook); `_` stands for `-`.
    pub environment: Vec<(String, String)>,
    /// `--var` values, in order; they win over the environment, and one that names no
    /// var is an error.
    pub values: Vec<(String, String)>,
}

impl Inputs {
    /// The value given for var `name`: the last `--var`, else its `OPENMONO_VAR_…`.
    pub fn given(&self, name: &str) -> Option<&String> {
        let value = |list: &[(String, String)], matches: &dyn Fn(&str) -> bool| {
            list.iter().rposition(|(n, _)| matches(n))
        };
        match value(&self.values, &|n| n == name) {
            Some(i) => Some(&self.values[i].1),
            None => value(&self.environment, &|n| {
                n == name || n.replace('_', "-") == name
            })
            .map(|i| &self.environment[i].1),
        }
    }
}

/// The `OPENMONO_VAR_…` variables that set no var, but would with another case
/// (`OPENMONO_VAR_MODEL` for a var `model`): names are case-sensitive, and such a
/// variable is otherwise ignored in silence. Each with the name it was likely meant as.
pub fn miscased_environment(playbook: &Playbook, inputs: &Inputs) -> Vec<(String, String)> {
    let same = |n: &str, name: &str| n == name || n.replace('_', "-") == name;
    inputs
        .environment
        .iter()
        .filter(|(n, _)| !playbook.vars.iter().any(|v| same(n, &v.name.value)))
        .filter_map(|(n, _)| {
            let var = playbook
                .vars
                .iter()
                .find(|v| same(&n.to_lowercase(), &v.name.value.to_lowercase()))?;
            Some((
                format!("OPENMONO_VAR_{n}"),
                format!("OPENMONO_VAR_{}", var.name.value.replace('-', "_")),
            ))
        })
        .collect()
}

/// Resolves vars and renders every templated string, reporting all problems at once.
pub fn render(playbook: &mut Playbook, inputs: &Inputs) -> Result<(), Vec<TemplateError>> {
    let mut errors = Vec::new();
    let vars = resolve_vars(playbook, inputs, &mut errors);
    // Templates that use a var in error would only repeat its error.
    if !errors.is_empty() {
        return Err(errors);
    }
    let context = context(playbook, inputs, vars);
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Keeps error ranges in release builds, so that errors can point at the name.
    env.set_debug(true);
    // Values land in shell commands and paths: booleans as the shell writes them.
    env.set_formatter(|out, state, value| {
        if value.kind() == minijinja::value::ValueKind::Bool {
            out.write_str(if value.is_true() { "true" } else { "false" })?;
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    // A template is a value, not a program: bounded in work and in size.
    env.set_fuel(Some(FUEL));
    let source = playbook.source.clone();
    // `required`: the value may not end up empty (a path, an image, a command).
    let mut render = |value: &mut Spanned<String>, required: bool| {
        if value.value.contains("{{") || value.value.contains("{%") {
            match render_one(&env, &value.value, &context) {
                Ok(rendered) => value.value = rendered,
                Err(e) => {
                    errors.push(template_error(&e, value, &source, &context));
                    return;
                }
            }
            if required && value.value.trim().is_empty() {
                errors.push(TemplateError::Empty { span: value.span });
            }
        }
    };
    for image in &mut playbook.images {
        render(&mut image.reference, true);
        render(&mut image.context, true);
        if let Some(dockerfile) = &mut image.dockerfile {
            render(dockerfile, true);
        }
        image
            .args
            .iter_mut()
            .for_each(|(_, value)| render(value, false));
    }
    for model in &mut playbook.models {
        [model.source.path_mut(), &mut model.image]
            .into_iter()
            .chain(model.alias.as_mut())
            .chain(model.sha256.as_mut())
            .chain(model.args.iter_mut())
            .for_each(|value| render(value, true));
    }
    for container in &mut playbook.containers {
        render(&mut container.image, true);
        container
            .env
            .iter_mut()
            .for_each(|(_, value)| render(value, false));
        [
            &mut container.workdir,
            &mut container.workspace,
            &mut container.user,
        ]
        .into_iter()
        .flatten()
        .chain(container.volumes.iter_mut().map(|v| &mut v.target))
        .chain(
            container
                .mounts
                .iter_mut()
                .flat_map(|m| [&mut m.source, &mut m.target]),
        )
        .chain(container.tmpfs.iter_mut().map(|t| &mut t.target))
        .for_each(|value| render(value, true));
        if let Some(health) = &mut container.health {
            match &mut health.probe {
                HealthProbe::Command(value) | HealthProbe::Http(value) => render(value, true),
            }
        }
    }
    for task in &mut playbook.tasks {
        task.env
            .iter_mut()
            .for_each(|(_, value)| render(value, false));
        match &mut task.kind {
            TaskKind::Agent {
                check, mcp, prompt, ..
            } => [prompt]
                .into_iter()
                .chain(check.as_mut())
                .chain(mcp.iter_mut().map(|server| &mut server.command))
                .for_each(|value| render(value, true)),
            TaskKind::Run { command, .. } => render(command, true),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn resolve_vars(
    playbook: &Playbook,
    inputs: &Inputs,
    errors: &mut Vec<TemplateError>,
) -> BTreeMap<String, Value> {
    for (name, _) in &inputs.values {
        if !playbook.vars.iter().any(|v| v.name.value == *name) {
            let names: Vec<&str> = playbook
                .vars
                .iter()
                .map(|v| v.name.value.as_str())
                .collect();
            errors.push(TemplateError::UnknownVar {
                help: closest(name, names.iter().copied()).map_or_else(
                    || {
                        if names.is_empty() {
                            "the playbook declares no `var`".to_owned()
                        } else {
                            format!("its vars: {}", names.join(", "))
                        }
                    },
                    |k| format!("did you mean `{k}`?"),
                ),
                name: name.clone(),
            });
        }
    }
    let mut vars = BTreeMap::new();
    for var in &playbook.vars {
        let name = &var.name.value;
        let given = inputs.given(name);
        let value = match (given, &var.default) {
            (Some(given), _) => {
                parse(var.ty, given, &inputs.cwd).ok_or_else(|| TemplateError::BadValue {
                    help: match var.ty {
                        VarType::Bool => "give `true` or `false`".to_owned(),
                        _ => "give a whole number".to_owned(),
                    },
                    name: name.clone(),
                    span: var.name.span,
                    ty: match var.ty {
                        VarType::Bool => "boolean",
                        _ => "integer",
                    },
                    value: given.clone(),
                })
            }
            (None, Some(default)) if !var.required => Ok(match &default.value {
                VarValue::Bool(b) => Value::from(*b),
                VarValue::Int(n) => Value::from(*n),
                VarValue::String(s) if var.ty == VarType::Path => {
                    Value::from(absolute(playbook.source.dir_at(default.span.offset()), s))
                }
                VarValue::String(s) => Value::from(s.clone()),
            }),
            (None, _) => Err(TemplateError::MissingVar {
                help: format!(
                    "give it with `--var {name}=VALUE` or the environment variable `OPENMONO_VAR_{name}`"
                ),
                name: name.clone(),
                span: var.name.span,
            }),
        };
        match value {
            Ok(v) => {
                vars.insert(name.clone(), v);
            }
            Err(e) => errors.push(e),
        }
    }
    vars
}

fn parse(ty: VarType, text: &str, cwd: &Path) -> Option<Value> {
    Some(match ty {
        VarType::Bool => match text {
            "true" => Value::from(true),
            "false" => Value::from(false),
            _ => return None,
        },
        VarType::Int => Value::from(text.parse::<i64>().ok()?),
        VarType::Path => Value::from(absolute(cwd, text)),
        VarType::String => Value::from(text),
    })
}

fn absolute(base: &Path, path: &str) -> String {
    base.join(path).display().to_string()
}

fn context(playbook: &Playbook, inputs: &Inputs, vars: BTreeMap<String, Value>) -> Value {
    let models: BTreeMap<String, Value> = playbook
        .models
        .iter()
        .map(|m| {
            let fields = BTreeMap::from([
                ("name", Value::from(m.served_name().to_owned())),
                ("url", Value::from(model_url(&m.name.value))),
            ]);
            (m.name.value.clone(), Value::from(fields))
        })
        .collect();
    Value::from(BTreeMap::from([
        ("var", Value::from(vars)),
        ("models", Value::from(models)),
        (
            "project",
            Value::from(BTreeMap::from([(
                "dir",
                Value::from(playbook.source.dir.display().to_string()),
            )])),
        ),
        (
            "run",
            Value::from(BTreeMap::from([("id", Value::from(inputs.run_id.clone()))])),
        ),
    ]))
}

/// Points a minijinja error at the part of the playbook's text it is about: the failing
/// expression when it can be found inside the string's span, else the whole string.
fn template_error(
    e: &minijinja::Error,
    value: &Spanned<String>,
    source: &super::Source,
    context: &Value,
) -> TemplateError {
    let expression = e.range().and_then(|r| value.value.get(r)).unwrap_or("");
    let literal = source.slice(value.span).unwrap_or("");
    let span: SourceSpan = match (!expression.is_empty())
        .then(|| literal.find(expression))
        .flatten()
    {
        Some(at) => (value.span.offset() + at, expression.len()).into(),
        None => value.span,
    };
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        let host = if expression.trim().starts_with("env") {
            "the host's environment is not visible: declare a `var` and give it with `--var`; "
        } else {
            ""
        };
        return TemplateError::Undefined {
            help: format!("{host}defined: {}", names(context).join(", ")),
            name: expression.trim().to_owned(),
            span,
        };
    }
    TemplateError::Render {
        help: Some(
            "templates use minijinja (Jinja2) syntax; `{% raw %}…{% endraw %}` keeps `{{` as text"
                .into(),
        ),
        message: e.detail().map_or_else(|| e.to_string(), str::to_owned),
        span,
    }
}

/// Every name a template can use, as `var.x`, `models.m.url`, …
fn names(context: &Value) -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value.try_iter() {
            Ok(keys) if value.kind() == minijinja::value::ValueKind::Map => {
                for key in keys {
                    let path = if prefix.is_empty() {
                        key.to_string()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    match value.get_item(&key) {
                        Ok(child) => walk(&path, &child, out),
                        Err(_) => out.push(path),
                    }
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    walk("", context, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::playbook::{Decoder, Source};

    const TEXT: &str = r#"var "who" default="world"
var "n" type="int" default=2
var "flag" type="bool" default=#false
var "dir" type="path" default="data"
network "net"
model "coder" {
    gguf "{{ var.dir }}/m.gguf"
    network "net"
}
container "box" {
    image "img"
}
task "t" {
    run "box" "echo {{ var.who }} {{ var.n + 1 }} {{ var.flag }} {{ models.coder.url }} {{ run.id }} {{ project.dir }}"
}
"#;

    fn rendered(text: &str, values: &[(&str, &str)]) -> Result<Playbook, Vec<TemplateError>> {
        let source = Source::from_text(Path::new("t.kdl"), PathBuf::from("/proj"), text.to_owned());
        let mut playbook = Decoder::new(&source).decode().expect("decodes").playbook;
        let inputs = Inputs {
            cwd: PathBuf::from("/cwd"),
            run_id: "r1".into(),
            environment: Vec::new(),
            values: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        render(&mut playbook, &inputs).map(|()| playbook)
    }

    fn command(playbook: &Playbook) -> &str {
        match &playbook.tasks[0].kind {
            TaskKind::Run { command, .. } => &command.value,
            TaskKind::Agent { .. } => panic!("a run task"),
        }
    }

    #[test]
    fn defaults_and_the_context_fill_the_templates() {
        let p = rendered(TEXT, &[]).expect("renders");
        assert_eq!(command(&p), "echo world 3 false http://coder:8080 r1 /proj");
        // A path default is made absolute against the playbook's folder.
        assert_eq!(p.models[0].source.path().value, "/proj/data/m.gguf");
    }

    #[test]
    fn given_values_win_the_last_one_first_and_paths_resolve_against_the_current_folder() {
        let p = rendered(
            TEXT,
            &[
                ("who", "env"),
                ("who", "cli"),
                ("n", "41"),
                ("flag", "true"),
                ("dir", "d"),
            ],
        )
        .expect("renders");
        assert_eq!(command(&p), "echo cli 42 true http://coder:8080 r1 /proj");
        assert_eq!(p.models[0].source.path().value, "/cwd/d/m.gguf");
    }

    #[test]
    fn a_model_pin_is_a_template_too() {
        let text = "var \"pin\" default=\"ab\"\nnetwork \"n\"\nmodel \"m\" {\n    gguf \"m.gguf\" sha256=\"{{ var.pin }}{{ var.pin }}\"\n    network \"n\"\n}\n";
        let p = rendered(text, &[("pin", "cd")]).expect("renders");
        assert_eq!(
            p.models[0].sha256.as_ref().map(|s| s.value.as_str()),
            Some("cdcd")
        );
    }

    #[test]
    fn an_agent_task_renders_its_prompt_check_and_mcp_commands() {
        let text = "var \"port\" type=\"int\" default=7\nnetwork \"n\"\nmodel \"m\" {\n    gguf \"m.gguf\"\n    network \"n\"\n}\ncontainer \"box\" {\n    image \"img\"\n    network \"n\"\n}\ntask \"t\" {\n    agent \"box\" model=\"m\"\n    prompt \"run {{ run.id }}\"\n    check \"test {{ var.port }}\" retries=2\n    mcp \"a\" \"serve --port {{ var.port }}\"\n    mcp \"b\" \"serve {{ models.m.url }}\"\n}\n";
        let p = rendered(text, &[]).expect("renders");
        let TaskKind::Agent {
            check,
            mcp,
            prompt,
            retries,
            ..
        } = &p.tasks[0].kind
        else {
            panic!("an agent task")
        };
        let commands: Vec<(&str, &str)> = mcp
            .iter()
            .map(|s| (s.name.value.as_str(), s.command.value.as_str()))
            .collect();
        assert_eq!(
            (
                prompt.value.as_str(),
                check.as_ref().map(|c| c.value.as_str()),
                *retries
            ),
            ("run r1", Some("test 7"), 2)
        );
        assert_eq!(
            commands,
            [("a", "serve --port 7"), ("b", "serve http://m:8080")]
        );
    }

    #[test]
    fn an_undefined_name_points_at_itself() {
        let text = "container \"box\" {\n    image \"img\"\n}\ntask \"t\" {\n    run \"box\" \"echo {{ var.nope }}\"\n}\n";
        let errors = rendered(text, &[]).expect_err("undefined");
        let [TemplateError::Undefined { name, span, .. }] = &errors[..] else {
            panic!("{errors:#?}")
        };
        assert_eq!(name, "var.nope");
        assert_eq!(&text[span.offset()..span.offset() + span.len()], "var.nope");
    }

    #[test]
    fn var_problems_are_reported_together_and_alone() {
        let text = "var \"need\"\nvar \"n\" type=\"int\" default=1\ncontainer \"box\" {\n    image \"img\"\n}\ntask \"t\" {\n    run \"box\" \"echo {{ var.n * 2 }}\"\n}\n";
        let errors = rendered(text, &[("n", "many"), ("nedd", "x")]).expect_err("fails");
        assert!(
            matches!(
                &errors[..],
                [
                    TemplateError::UnknownVar { help: h1, .. },
                    TemplateError::MissingVar { .. },
                    TemplateError::BadValue { .. },
                ] if h1 == "did you mean `need`?"
            ),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_template_is_bounded_in_work_and_in_size() {
        for body in [
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
            "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
        ] {
            let text = format!(
                "container \"box\" {{\n    image \"img\"\n}}\ntask \"t\" {{\n    run \"box\" #\"{body}\"#\n}}\n"
            );
            let errors = rendered(&text, &[]).expect_err("stopped");
            assert!(
                matches!(&errors[..], [TemplateError::Render { .. }]),
                "{errors:#?}"
            );
        }
    }

    #[test]
    fn a_value_that_renders_empty_is_an_error() {
        let text = "var \"e\" default=\"\"\ncontainer \"box\" {\n    image \"{{ var.e }}\"\n}\n";
        assert!(matches!(
            &rendered(text, &[]).expect_err("empty")[..],
            [TemplateError::Empty { .. }]
        ));
    }

    #[test]
    fn the_environment_sets_vars_by_name_and_is_otherwise_ignored() {
        let source = Source::from_text(
            Path::new("t.kdl"),
            PathBuf::from("/proj"),
            "var \"my-var\"\ncontainer \"box\" {\n    image \"img\"\n}\ntask \"t\" {\n    run \"box\" \"echo {{ var['my-var'] }}\"\n}\n".to_owned(),
        );
        let mut playbook = Decoder::new(&source).decode().expect("decodes").playbook;
        let inputs = Inputs {
            cwd: PathBuf::from("/cwd"),
            environment: vec![
                ("my_var".to_owned(), "from-env".to_owned()),
                ("SOMETHING_ELSE".to_owned(), "ignored".to_owned()),
            ],
            run_id: "r1".into(),
            values: Vec::new(),
        };
        render(&mut playbook, &inputs).expect("renders");
        assert_eq!(command(&playbook), "echo from-env");
    }

    #[test]
    fn the_host_environment_is_not_visible() {
        let text = "container \"box\" {\n    image \"img\"\n}\ntask \"t\" {\n    run \"box\" \"echo {{ env.HOME }}\"\n}\n";
        assert!(matches!(
            &rendered(text, &[]).expect_err("undefined")[..],
            [TemplateError::Undefined { .. }]
        ));
    }
}
