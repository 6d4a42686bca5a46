//! Where each YAML node sits in its file, by JSON pointer, so that schema errors
//! (which speak JSON pointers) can be reported as `file:line:column`.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, Span};

use crate::diag::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: Option<Pos>,
    value: Pos,
}

/// JSON pointer → position of the node (and of its key, for mapping values).
#[derive(Debug, Default)]
pub struct SourceMap {
    entries: HashMap<String, Entry>,
    /// Keys that appear twice in one mapping: (pointer of the repeat, its position).
    pub duplicate_keys: Vec<(String, Pos)>,
}

enum Frame {
    Seq {
        pointer: Option<String>,
        next: usize,
    },
    Map {
        pointer: Option<String>,
        key: Option<(String, Pos)>,
        expecting_key: bool,
        seen: HashSet<String>,
    },
}

fn pos(span: &Span) -> Pos {
    Pos {
        line: span.start.line().max(1),
        column: span.start.col() + 1,
    }
}

/// Escape one reference token as RFC 6901 says.
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl SourceMap {
    /// Index the first document of `source`. A syntax error ends indexing early; what
    /// was indexed so far stays usable (the YAML error itself is reported elsewhere).
    pub fn build(source: &str) -> SourceMap {
        let mut map = SourceMap::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut root_seen = false;
        for event in Parser::new_from_str(source) {
            let Ok((event, span)) = event else { break };
            let here = pos(&span);
            match event {
                Event::DocumentEnd if root_seen => break,
                Event::Scalar(..)
                | Event::Alias(..)
                | Event::SequenceStart(..)
                | Event::MappingStart(..) => {
                    let scalar = match &event {
                        Event::Scalar(text, ..) => Some(text.to_string()),
                        _ => None,
                    };
                    // Decide what this node is: the root, an item, a key or a value.
                    let (pointer, key_pos) = match stack.last_mut() {
                        None => {
                            root_seen = true;
                            (Some(String::new()), None)
                        }
                        Some(Frame::Seq { pointer, next }) => {
                            let p = pointer.as_ref().map(|p| format!("{p}/{next}"));
                            *next += 1;
                            (p, None)
                        }
                        Some(Frame::Map {
                            pointer,
                            key,
                            expecting_key,
                            seen,
                        }) => {
                            if *expecting_key {
                                *expecting_key = false;
                                *key = scalar.clone().map(|k| (k, here));
                                if let (Some(p), Some(k)) = (pointer.as_ref(), scalar.as_ref())
                                    && !seen.insert(k.clone())
                                {
                                    map.duplicate_keys
                                        .push((format!("{p}/{}", escape_token(k)), here));
                                }
                                // A key is not a node of the value tree; a complex key's
                                // children are not indexed.
                                if let Event::SequenceStart(..) | Event::MappingStart(..) = event {
                                    stack.push(Frame::Seq {
                                        pointer: None,
                                        next: 0,
                                    });
                                }
                                continue;
                            }
                            *expecting_key = true;
                            match (pointer.as_ref(), key.take()) {
                                (Some(p), Some((k, kpos))) => {
                                    (Some(format!("{p}/{}", escape_token(&k))), Some(kpos))
                                }
                                _ => (None, None),
                            }
                        }
                    };
                    if let Some(p) = &pointer {
                        map.entries.entry(p.clone()).or_insert(Entry {
                            key: key_pos,
                            value: here,
                        });
                    }
                    match event {
                        Event::SequenceStart(..) => stack.push(Frame::Seq { pointer, next: 0 }),
                        Event::MappingStart(..) => stack.push(Frame::Map {
                            pointer,
                            key: None,
                            expecting_key: true,
                            seen: HashSet::new(),
                        }),
                        _ => {}
                    }
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        map
    }

    /// Position of the value at `pointer`, or of its nearest indexed ancestor.
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.lookup(pointer).map(|e| e.value).unwrap_or(Pos::START)
    }

    /// Position of the key naming the value at `pointer` (the value itself for items).
    pub fn key_pos(&self, pointer: &str) -> Pos {
        self.lookup(pointer)
            .map(|e| e.key.unwrap_or(e.value))
            .unwrap_or(Pos::START)
    }

    fn lookup(&self, pointer: &str) -> Option<&Entry> {
        let mut p = pointer;
        loop {
            if let Some(e) = self.entries.get(p) {
                return Some(e);
            }
            let cut = p.rfind('/')?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
name: hot
window:
  initial: today
collections:
  - api_logs
  - name: scan/records
    timeField: createdAt
flow: {a: 1, b: [x, y]}
";

    // Values, keys, sequence items and flow nodes are all found by pointer.
    #[test]
    fn locates_nodes_by_pointer() {
        let m = SourceMap::build(SRC);
        assert_eq!(m.value_pos("/name"), Pos { line: 1, column: 7 });
        assert_eq!(m.key_pos("/name"), Pos { line: 1, column: 1 });
        assert_eq!(
            m.value_pos("/window/initial"),
            Pos {
                line: 3,
                column: 12
            }
        );
        assert_eq!(m.value_pos("/collections/0"), Pos { line: 5, column: 5 });
        assert_eq!(m.key_pos("/collections/1/name"), Pos { line: 6, column: 5 });
        assert_eq!(
            m.key_pos("/collections/1/timeField"),
            Pos { line: 7, column: 5 }
        );
        assert_eq!(
            m.value_pos("/flow/b/1"),
            Pos {
                line: 8,
                column: 21
            }
        );
    }

    // A pointer that names nothing falls back to its nearest ancestor.
    #[test]
    fn falls_back_to_ancestor() {
        let m = SourceMap::build(SRC);
        assert_eq!(m.value_pos("/window/settle"), m.value_pos("/window"));
        assert_eq!(m.value_pos("/nothing/here"), m.value_pos(""));
    }

    // A key repeated in one mapping is reported at the repeat.
    #[test]
    fn reports_duplicate_keys() {
        let m = SourceMap::build("a: 1\nb: 2\na: 3\n");
        assert_eq!(
            m.duplicate_keys,
            vec![("/a".to_string(), Pos { line: 3, column: 1 })]
        );
    }
}
