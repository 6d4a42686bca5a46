//! Compile validated policies into a job plan: one job per (policy, collection), with
//! its database, mode and settings resolved. The scheduler and `dcb run` execute it.

pub mod diff;

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::policy::{CollectionSpec, Mode, NoDatabase, Policy};
use crate::window::{self, Extent};

/// One collection of one policy, ready to export.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub policy: String,
    pub database: String,
    pub collection: CollectionSpec,
}

impl JobSpec {
    /// Stable identity, used in state, logs and hot-reload diffs. The database is
    /// part of it: a watermark of one database says nothing about another.
    pub fn id(&self) -> String {
        job_id(&self.policy, &self.database, &self.collection.name)
    }
}

/// The id of a policy's job for one collection: `<policy>/<database>/<collection>`
/// (names hold no `/`).
pub fn job_id(policy: &str, database: &str, collection: &str) -> String {
    format!("{policy}/{database}/{collection}")
}

/// Watermarks by job id.
pub type Watermarks = HashMap<String, DateTime<Utc>>;

/// Everything a policy's run would do.
#[derive(Debug, Clone)]
pub struct PolicyPlan {
    pub policy: Policy,
    /// The database it backs up (its own, dcb.yaml's or the URI's).
    pub database: String,
    pub jobs: Vec<JobSpec>,
}

impl PolicyPlan {
    /// Whether some of its collections are named by pattern, so its jobs depend on
    /// what the database holds when the run starts.
    pub fn has_patterns(&self) -> bool {
        !self.policy.patterns.is_empty()
    }

    /// This plan with its patterns matched against `existing`, the collections of its
    /// database; the matches whose names cannot become files are returned apart.
    pub fn matched(
        &self,
        existing: &[String],
        exclude: &crate::discover::Exclude,
    ) -> (PolicyPlan, Vec<crate::discover::Unusable>) {
        let (collections, unusable) =
            crate::discover::expand(&self.policy, &self.database, existing, exclude);
        let jobs = collections
            .into_iter()
            .map(|collection| JobSpec {
                policy: self.policy.name.clone(),
                database: self.database.clone(),
                collection,
            })
            .collect();
        (
            PolicyPlan {
                policy: self.policy.clone(),
                database: self.database.clone(),
                jobs,
            },
            unusable,
        )
    }

    /// Jobs standing for the plan's patterns, for reporting a run that could not
    /// match them (the pattern is the collection's name).
    pub fn pattern_jobs(&self) -> Vec<JobSpec> {
        self.policy
            .patterns
            .iter()
            .map(|c| JobSpec {
                policy: self.policy.name.clone(),
                database: self.database.clone(),
                collection: c.clone(),
            })
            .collect()
    }
}

/// Resolve each policy's database and split it into jobs. Errors name the policy.
pub fn compile(
    policies: &[Policy],
    settings: &Settings,
) -> Result<Vec<PolicyPlan>, Vec<NoDatabase>> {
    let (plans, errors) = compile_each(policies, settings);
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(errors)
    }
}

/// As [`compile`], one policy at a time: the plans of the policies that compile, and
/// the error of each that does not. One bad policy never hides the rest.
pub fn compile_each(
    policies: &[Policy],
    settings: &Settings,
) -> (Vec<PolicyPlan>, Vec<NoDatabase>) {
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for policy in policies {
        match settings.database_for(policy) {
            Ok(database) => plans.push(PolicyPlan {
                jobs: policy
                    .collections
                    .iter()
                    .map(|c| JobSpec {
                        policy: policy.name.clone(),
                        database: database.clone(),
                        collection: c.clone(),
                    })
                    .collect(),
                policy: policy.clone(),
                database,
            }),
            Err(e) => errors.push(e),
        }
    }
    (plans, errors)
}

/// The plan as `dcb plan --json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub policy: String,
    pub file: String,
    pub enabled: bool,
    pub schedule: String,
    pub timezone: String,
    pub next_runs: Vec<String>,
    pub database: String,
    pub retention: String,
    pub keep_last: u32,
    pub concurrency: usize,
    pub compression_level: u32,
    pub collections: Vec<CollectionView>,
    /// Patterns of collection names, matched when each run starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionView {
    pub name: String,
    pub time_field: String,
    pub mode: Mode,
    /// RFC 3339 in the policy's zone; absent when unbounded or in snapshot mode.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Where `from` comes from: `watermark`, `initial: today`, ...
    pub from_source: String,
}

/// Describe what each policy would do if it ran at `now`.
pub fn view(
    plans: &[PolicyPlan],
    watermarks: &Watermarks,
    now: DateTime<Utc>,
    runs: usize,
) -> Vec<PlanView> {
    plans
        .iter()
        .map(|pp| {
            let p = &pp.policy;
            let tz = p.timezone;
            let local_now = now.with_timezone(&tz);
            let next_runs = p
                .schedule
                .upcoming(&local_now, runs)
                .iter()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, false))
                .collect();
            let collections = pp
                .jobs
                .iter()
                .map(|job| {
                    let c = &job.collection;
                    let wm = watermarks.get(&job.id()).copied();
                    let extent = window::compute(c.mode, &p.window, tz, wm, now);
                    let (from, to, from_source) = match extent {
                        Extent::Snapshot => (None, None, "whole collection".to_string()),
                        Extent::Window(w) => (
                            w.from.map(|f| {
                                f.with_timezone(&tz)
                                    .to_rfc3339_opts(SecondsFormat::Secs, false)
                            }),
                            Some(
                                w.to.with_timezone(&tz)
                                    .to_rfc3339_opts(SecondsFormat::Secs, false),
                            ),
                            match wm {
                                Some(_) => "watermark".to_string(),
                                None => format!("initial: {}", p.window.initial),
                            },
                        ),
                    };
                    CollectionView {
                        name: c.name.clone(),
                        time_field: c.time_field.clone(),
                        mode: c.mode,
                        from,
                        to,
                        from_source,
                    }
                })
                .collect();
            PlanView {
                policy: p.name.clone(),
                file: p.file.display().to_string(),
                enabled: p.enabled,
                schedule: p.schedule.pattern().to_string(),
                timezone: tz.name().to_string(),
                next_runs,
                database: pp.database.clone(),
                retention: p.retention.to_string(),
                keep_last: p.keep_last,
                concurrency: p.concurrency,
                compression_level: p.compression_level,
                collections,
                patterns: p.patterns.iter().map(|c| c.name.clone()).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::document::Document;
    use crate::policy::validate::{Defaults, validate};

    fn policy(name: &str, rest: &str) -> Policy {
        let file = format!("{name}.yaml");
        let doc =
            Document::parse(std::path::Path::new(&file), format!("name: {name}\n{rest}")).unwrap();
        let defaults = Defaults {
            timezone: chrono_tz::Tz::UTC,
            concurrency: 1,
            targets: vec!["local".into()],
        };
        let (p, diags) = validate(&doc, &defaults);
        p.unwrap_or_else(|| panic!("{diags:?}"))
    }

    // A policy with no database anywhere fails alone: the others still compile (the
    // service's health checks and schedules go on for them).
    #[test]
    fn one_bad_policy_does_not_hide_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("dcb.yaml");
        std::fs::write(&config, "{}\n").unwrap();
        let overrides = Overrides {
            config: Some(config),
            ..Overrides::default()
        };
        let settings = Settings::resolve(&overrides, &|_: &str| None).unwrap();
        let bad = policy(
            "off",
            "enabled: false\nschedule: \"0 * * * *\"\ncollections: [a]\nretention: 1d\n",
        );
        let good = policy(
            "hot",
            "schedule: \"0 * * * *\"\ndatabase: mes\ncollections: [a, b]\nretention: 1d\n",
        );
        let (plans, errors) = compile_each(&[bad.clone(), good.clone()], &settings);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].policy.name, "hot");
        assert_eq!(plans[0].jobs.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "off");
        assert!(
            errors[0].to_string().contains("names no database"),
            "{errors:?}"
        );
        assert!(compile(&[bad, good], &settings).is_err());
    }
}
