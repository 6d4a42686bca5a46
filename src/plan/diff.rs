//! What a reload changes: the policies added, changed and removed, compared by value,
//! so that only their schedules are touched.

use std::collections::BTreeMap;

use crate::policy::Policy;

/// The difference between two sets of scheduled policies, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl PlanDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The policies that run (enabled ones) in `old` and `new`, compared by value: a
/// policy whose file changed in nothing that matters (a comment) is not changed.
pub fn diff(old: &BTreeMap<String, Policy>, new: &BTreeMap<String, Policy>) -> PlanDiff {
    let runs =
        |m: &BTreeMap<String, Policy>, name: &str| m.get(name).filter(|p| p.enabled).cloned();
    let mut out = PlanDiff::default();
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        match (runs(old, name), runs(new, name)) {
            (None, Some(_)) => out.added.push(name.clone()),
            (Some(_), None) => out.removed.push(name.clone()),
            (Some(a), Some(b)) if a != b => out.changed.push(name.clone()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use crate::policy::validate::{Defaults, validate};

    fn policy(name: &str, rest: &str) -> Policy {
        let text = format!("name: {name}\ncollections: [a]\nretention: 1d\n{rest}");
        let doc = Document::parse(std::path::Path::new(&format!("{name}.yaml")), text).unwrap();
        let defaults = Defaults {
            timezone: chrono_tz::Tz::UTC,
            concurrency: 1,
            targets: vec!["local".into()],
        };
        validate(&doc, &defaults).0.unwrap()
    }

    fn set(ps: &[Policy]) -> BTreeMap<String, Policy> {
        ps.iter().map(|p| (p.name.clone(), p.clone())).collect()
    }

    // Added, changed and removed policies are told apart; an identical policy is not
    // changed; enabling counts as adding and disabling as removing.
    #[test]
    fn diffs_by_value() {
        let hourly = "schedule: \"0 * * * *\"\n";
        let old = set(&[
            policy("same", hourly),
            policy("edited", hourly),
            policy("gone", hourly),
            policy("switched_off", hourly),
            policy("switched_on", &format!("{hourly}enabled: false\n")),
        ]);
        let new = set(&[
            policy("same", hourly),
            policy("edited", "schedule: \"30 * * * *\"\n"),
            policy("new", hourly),
            policy("switched_off", &format!("{hourly}enabled: false\n")),
            policy("switched_on", hourly),
        ]);
        let d = diff(&old, &new);
        assert_eq!(d.added, ["new", "switched_on"]);
        assert_eq!(d.changed, ["edited"]);
        assert_eq!(d.removed, ["gone", "switched_off"]);
        assert!(diff(&new, &new).is_empty());
        // A change of anything the engine uses is a change (here: retention).
        let longer = set(&[policy("same", &format!("{hourly}keepLast: 4\n"))]);
        assert_eq!(
            diff(&set(&[policy("same", hourly)]), &longer).changed,
            ["same"]
        );
    }
}
