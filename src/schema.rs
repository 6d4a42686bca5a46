//! The JSON schemas of policy and config files, generated from the Rust types.

use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

use crate::config::ConfigFile;
use crate::policy::PolicyFile;

fn generate<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema is always valid JSON")
}

pub fn policy() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(generate::<PolicyFile>)
}

pub fn config() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(generate::<ConfigFile>)
}

pub fn policy_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| jsonschema::validator_for(policy()).expect("generated schema compiles"))
}

pub fn config_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| jsonschema::validator_for(config()).expect("generated schema compiles"))
}

/// The committed form: pretty JSON with a trailing newline.
pub fn render(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).expect("serializable");
    s.push('\n');
    s
}
