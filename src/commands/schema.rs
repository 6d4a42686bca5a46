//! `dcb schema policy|config`.

use super::Exit;
use crate::cli::{SchemaArgs, SchemaKind};

pub fn run(args: &SchemaArgs) -> Exit {
    let schema = match args.kind {
        SchemaKind::Policy => crate::policy::schema(),
        SchemaKind::Config => crate::config::schema(),
    };
    out!("{}", crate::schema::render(schema));
    Exit::Ok
}
