//! `dcb schema policy|config`.

use super::Exit;
use crate::cli::{SchemaArgs, SchemaKind};

pub fn run(args: &SchemaArgs) -> Exit {
    let schema = match args.kind {
        SchemaKind::Policy => crate::schema::policy(),
        SchemaKind::Config => crate::schema::config(),
    };
    out!("{}", crate::schema::render(schema));
    Exit::Ok
}
