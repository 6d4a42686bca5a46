//! The `drill` section, as dcb.yaml (the defaults) and a policy (its overrides) write
//! it, and its validated form. A drill restores a policy's newest archives into a
//! scratch database and compares ([`crate::drill`]).

use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;

/// What every scratch database name starts with: dcb creates and drops only these.
pub const SCRATCH_PREFIX: &str = "dcb_drill";
/// The scratch database of a policy unless `database` says otherwise.
pub const DEFAULT_PATTERN: &str = "dcb_drill_{policy}";
/// Documents compared with the live source unless `sample` says otherwise.
pub const DEFAULT_SAMPLE: u32 = 100;

/// Restore drills: on a schedule, restore the newest archives into a scratch database,
/// compare it with the archives and the live source, drop it. Needs `readWrite` on the
/// scratch databases (`dcb_drill*`) and `read` on the source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrillFile {
    /// Set to `false` to never drill (in dcb.yaml: no policy; in a policy: this one).
    /// Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// When the service drills: a cron expression like a policy's `schedule`, e.g.
    /// `0 3 * * 0` (Sundays at 03:00). Without one the service never drills;
    /// `dcb drill` still does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub schedule: Option<String>,

    /// IANA time zone of `schedule`. Default: the policy's, else dcb.yaml's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,

    /// The scratch database: `{policy}` is replaced by the policy's name. It must start
    /// with `dcb_drill`; dcb refuses a database of that name that it did not create.
    /// Default: `dcb_drill_{policy}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,

    /// Drill only this many collections each time, a different few each day, rather
    /// than all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub collections_per_drill: Option<u32>,

    /// Documents per collection compared with the live source by `_id` (0: none).
    /// Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub sample: Option<u32>,
}

/// A `drill` section, parsed. Every field optional: a policy's overrides dcb.yaml's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrillSpec {
    pub enabled: Option<bool>,
    pub schedule: Option<Schedule>,
    pub timezone: Option<Tz>,
    pub database: Option<String>,
    pub collections_per_drill: Option<u32>,
    pub sample: Option<u32>,
}

impl DrillSpec {
    /// These settings where set, `base`'s elsewhere.
    pub fn over(&self, base: &DrillSpec) -> DrillSpec {
        DrillSpec {
            enabled: self.enabled.or(base.enabled),
            schedule: self.schedule.clone().or_else(|| base.schedule.clone()),
            timezone: self.timezone.or(base.timezone),
            database: self.database.clone().or_else(|| base.database.clone()),
            collections_per_drill: self.collections_per_drill.or(base.collections_per_drill),
            sample: self.sample.or(base.sample),
        }
    }
}

impl DrillFile {
    /// Parse, naming the field (a JSON pointer below the section) of each problem.
    pub fn parse(&self) -> Result<DrillSpec, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let schedule = match self.schedule.as_deref().map(Schedule::parse) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                problems.push(("/schedule".to_string(), e.to_string()));
                None
            }
            None => None,
        };
        let timezone = match self.timezone.as_deref().map(|tz| (tz, tz.parse::<Tz>())) {
            Some((_, Ok(tz))) => Some(tz),
            Some((name, Err(_))) => {
                problems.push((
                    "/timezone".to_string(),
                    format!("unknown time zone `{name}`; use an IANA name such as `Asia/Shanghai`"),
                ));
                None
            }
            None => None,
        };
        if let Some(p) = &self.database
            && let Err(e) = check_pattern(p)
        {
            problems.push(("/database".to_string(), e.0));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(DrillSpec {
            enabled: self.enabled,
            schedule,
            timezone,
            database: self.database.clone(),
            collections_per_drill: self.collections_per_drill,
            sample: self.sample,
        })
    }
}

/// The scratch database of `policy` by `pattern`.
pub fn scratch_name(pattern: &str, policy: &str) -> String {
    pattern.replace("{policy}", policy)
}

/// A pattern must name databases dcb owns, one per policy, that MongoDB accepts.
pub fn check_pattern(pattern: &str) -> Result<(), crate::error::Invalid> {
    pattern_problem(pattern).map_err(crate::error::Invalid)
}

fn pattern_problem(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with(SCRATCH_PREFIX) {
        return Err(format!(
            "the scratch database `{pattern}` must start with `{SCRATCH_PREFIX}` (dcb creates and drops only those)"
        ));
    }
    if !pattern.contains("{policy}") {
        return Err(format!(
            "the scratch database `{pattern}` must contain `{{policy}}`, so that two policies never drill into the same database"
        ));
    }
    // A long policy name is checked when the name is made; this is the shape.
    crate::names::check_database(&scratch_name(pattern, "p"))
        .map_err(|e| format!("the scratch database `{pattern}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // Only names under dcb's prefix, one per policy, valid for MongoDB.
    #[rstest]
    #[case("dcb_drill_{policy}", true)]
    #[case("dcb_drill-{policy}-x", true)]
    #[case("dcMes", false)]
    #[case("x_dcb_drill_{policy}", false)]
    #[case("dcb_drill", false)]
    #[case("dcb_drill_{policy}.x", false)]
    fn patterns(#[case] pattern: &str, #[case] ok: bool) {
        assert_eq!(check_pattern(pattern).is_ok(), ok, "{pattern}");
    }

    // A policy's settings win over dcb.yaml's, field by field.
    #[test]
    fn policy_overrides_defaults() {
        let base = DrillFile {
            schedule: Some("0 3 * * *".into()),
            sample: Some(5),
            ..DrillFile::default()
        }
        .parse()
        .unwrap();
        let own = DrillFile {
            enabled: Some(false),
            sample: Some(9),
            ..DrillFile::default()
        }
        .parse()
        .unwrap();
        let eff = own.over(&base);
        assert_eq!(eff.enabled, Some(false));
        assert_eq!(eff.sample, Some(9));
        assert_eq!(eff.schedule.unwrap().pattern(), "0 3 * * *");
        let bad = DrillFile {
            schedule: Some("nope".into()),
            database: Some("live".into()),
            ..DrillFile::default()
        }
        .parse()
        .unwrap_err();
        let fields: Vec<&str> = bad.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(fields, ["/schedule", "/database"]);
    }
}
