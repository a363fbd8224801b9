//! A tool as a server declares it in `tools/list`: its definition, with the input and output
//! schemas compiled on first use, the argument names it declares, and its flags.

use std::sync::OnceLock;

use serde_json::Value;

/// A tool as the server declared it, with its schemas compiled on first use (compiling costs
/// far more than validating; a definition changes only with the list).
pub struct Tool {
    pub def: Value,
    input: OnceLock<Option<Result<jsonschema::Validator, String>>>,
    output: OnceLock<Option<Result<jsonschema::Validator, String>>>,
}

fn compile(schema: Option<&Value>) -> Option<Result<jsonschema::Validator, String>> {
    schema.map(|s| jsonschema::validator_for(s).map_err(|e| e.to_string()))
}

impl Tool {
    pub fn new(def: Value) -> Tool {
        Tool { def, input: OnceLock::new(), output: OnceLock::new() }
    }

    /// The compiled `inputSchema`: `None` without one, `Err` when it does not compile.
    pub fn input_validator(&self) -> Option<Result<&jsonschema::Validator, &str>> {
        let compiled = self.input.get_or_init(|| compile(self.def.get("inputSchema")));
        compiled.as_ref().map(|r| r.as_ref().map_err(String::as_str))
    }

    pub fn output_validator(&self) -> Option<&jsonschema::Validator> {
        let compiled = self.output.get_or_init(|| compile(self.def.get("outputSchema")));
        compiled.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// The argument names the `inputSchema` declares (its top-level `properties`).
    pub fn declared_arguments(&self) -> Vec<&str> {
        self.def
            .pointer("/inputSchema/properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether the `inputSchema` declares `name` as a boolean argument (or without a type).
    pub fn declares_flag(&self, name: &str) -> bool {
        match self.def.pointer("/inputSchema/properties").and_then(|p| p.get(name)) {
            None => false,
            Some(prop) => match prop.get("type") {
                None => true,
                Some(Value::String(t)) => t == "boolean",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "boolean"),
                Some(_) => false,
            },
        }
    }
}
