//! A tool call's arguments, read leniently: small models send numbers as strings,
//! encode the JSON object twice, or add fields of their own. Every mistake comes back
//! as a message that tells the model how to call the tool.

use serde_json::{Map, Value};

/// The arguments of one call of the tool `tool`.
#[derive(Debug)]
pub struct ToolArgs<'a> {
    map: Map<String, Value>,
    tool: &'a str,
    /// An example call, quoted in error messages.
    usage: &'a str,
}

impl<'a> ToolArgs<'a> {
    /// Reads the JSON text the model sent; `usage` is an example of good arguments.
    pub fn parse(tool: &'a str, raw: &str, usage: &'a str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(raw).map_err(|error| {
            format!(
                "error: the arguments are not valid JSON ({error}); call `{tool}` with \
                 arguments like {usage}"
            )
        })?;
        // Some models encode the arguments twice: a JSON string holding the object.
        let value = match value {
            Value::String(inner) => serde_json::from_str(&inner).unwrap_or(Value::String(inner)),
            other => other,
        };
        match value {
            Value::Object(map) => Ok(Self { map, tool, usage }),
            _ => Err(format!(
                "error: the arguments of `{tool}` must be a JSON object, like {usage}"
            )),
        }
    }

    /// A string the call must have.
    pub fn string(&self, name: &str) -> Result<String, String> {
        self.opt_string(name)?.ok_or_else(|| {
            format!(
                "error: `{}` needs `{name}` (a string); call it like {}",
                self.tool, self.usage
            )
        })
    }

    /// A string the call may have; `null` counts as absent.
    pub fn opt_string(&self, name: &str) -> Result<Option<String>, String> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(self.wrong(name, "a string", other)),
        }
    }

    /// A whole number the call may have, as a number or a string of digits.
    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, String> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) if number.as_u64().is_some() => Ok(number.as_u64()),
            Some(Value::String(text)) if text.trim().parse::<u64>().is_ok() => {
                Ok(text.trim().parse().ok())
            }
            Some(other) => Err(self.wrong(name, "a whole number", other)),
        }
    }

    /// A yes or no the call may have, as a boolean or the string `true` or `false`.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, String> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(Value::String(text)) if text == "true" || text == "false" => {
                Ok(Some(text == "true"))
            }
            Some(other) => Err(self.wrong(name, "true or false", other)),
        }
    }

    fn wrong(&self, name: &str, kind: &str, value: &Value) -> String {
        let mut shown = value.to_string();
        if shown.len() > 60 {
            shown = format!("{}…", shown.chars().take(60).collect::<String>());
        }
        format!(
            "error: `{name}` of `{}` must be {kind}, not {shown}; call it like {}",
            self.tool, self.usage
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = r#"{"path": "a.txt"}"#;

    #[test]
    fn reads_plain_and_twice_encoded_objects() {
        let args = ToolArgs::parse("read_file", r#"{"path":"a","n":"12","b":"true"}"#, USAGE)
            .expect("arguments");
        assert_eq!(args.string("path"), Ok("a".into()));
        assert_eq!(args.opt_u64("n"), Ok(Some(12)));
        assert_eq!(args.opt_bool("b"), Ok(Some(true)));
        assert_eq!(args.opt_u64("missing"), Ok(None));
        let twice = ToolArgs::parse("read_file", r#""{\"path\":\"b\"}""#, USAGE).expect("twice");
        assert_eq!(twice.string("path"), Ok("b".into()));
    }

    #[test]
    fn mistakes_say_how_to_call_the_tool() {
        let error = ToolArgs::parse("read_file", r#"{"path": "a"#, USAGE).expect_err("bad JSON");
        assert!(
            error.starts_with("error: the arguments are not valid JSON (EOF while parsing")
                && error.ends_with(r#"call `read_file` with arguments like {"path": "a.txt"}"#),
            "{error}"
        );
        assert_eq!(
            ToolArgs::parse("read_file", "[1]", USAGE).expect_err("not an object"),
            r#"error: the arguments of `read_file` must be a JSON object, like {"path": "a.txt"}"#
        );
        let args = ToolArgs::parse("read_file", r#"{"p":"a","n":-1,"b":1}"#, USAGE).expect("args");
        assert_eq!(
            args.string("path"),
            Err(
                r#"error: `read_file` needs `path` (a string); call it like {"path": "a.txt"}"#
                    .into()
            )
        );
        assert_eq!(
            args.opt_u64("n"),
            Err(r#"error: `n` of `read_file` must be a whole number, not -1; call it like {"path": "a.txt"}"#.into())
        );
        assert_eq!(
            args.opt_bool("b"),
            Err(r#"error: `b` of `read_file` must be true or false, not 1; call it like {"path": "a.txt"}"#.into())
        );
    }
}
