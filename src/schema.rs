//! JSON schemas generated from the Rust types of the files dcb reads (`policy::schema`,
//! `config::schema`): the generator, the validator and the committed form.

use jsonschema::Validator;
use serde_json::Value;

/// The schema of `T`, as JSON.
pub fn generate<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema is always valid JSON")
}

/// A validator for a schema dcb generated.
pub fn compile(schema: &Value) -> Validator {
    jsonschema::validator_for(schema).expect("generated schema compiles")
}

/// The committed form: pretty JSON with a trailing newline.
pub fn render(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).expect("serializable");
    s.push('\n');
    s
}
