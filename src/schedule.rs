//! Cron schedules as croner reads them (5 fields, or 6 with seconds), evaluated in a
//! time zone.

use crate::error::Invalid;
use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    pattern: String,
}

/// Two schedules are the same when their patterns are.
impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// Parse a pattern and prove it fires at least once in the future.
    pub fn parse(pattern: &str) -> Result<Schedule, Invalid> {
        let fields = pattern.split_whitespace().count();
        if !pattern.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(Invalid(format!(
                "cron expression has {fields} field{}; expected 5 (minute hour day month weekday) or 6 (with seconds first)",
                if fields == 1 { "" } else { "s" }
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(pattern)
            .or_else(|_| Cron::from_str(pattern))
            .map_err(|e| Invalid(e.to_string()))?;
        let schedule = Schedule {
            cron,
            pattern: pattern.to_string(),
        };
        if schedule.next_after(&chrono::Utc::now()).is_none() {
            return Err(Invalid::new(
                "cron expression never fires (no matching date exists)",
            ));
        }
        Ok(schedule)
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The first fire time strictly after `t`.
    pub fn next_after<Z: TimeZone>(&self, t: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.cron.find_next_occurrence(t, false).ok()
    }

    /// The last fire time strictly before `t`.
    pub fn previous_before<Z: TimeZone>(&self, t: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.cron.find_previous_occurrence(t, false).ok()
    }

    /// The next `n` fire times after `t`.
    pub fn upcoming<Z: TimeZone>(&self, t: &DateTime<Z>, n: usize) -> Vec<DateTime<Z>> {
        // `n` may come from the command line: never reserve more than a plan can use.
        let mut out = Vec::with_capacity(n.min(1024));
        let mut cur = t.clone();
        while out.len() < n {
            match self.next_after(&cur) {
                Some(next) => {
                    cur = next.clone();
                    out.push(next);
                }
                None => break,
            }
        }
        out
    }

    /// The longest gap between consecutive fire times over the next 64 firings: the
    /// interval a policy must tolerate (weekday-only schedules have a weekend gap).
    pub fn longest_interval<Z: TimeZone>(&self, from: &DateTime<Z>) -> Option<Duration> {
        let times = self.upcoming(from, 64);
        times
            .windows(2)
            .filter_map(|w| (w[1].clone() - w[0].clone()).to_std().ok())
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Shanghai;
    use rstest::rstest;

    // The seed's schedules fire when the seed said they would, in Shanghai time.
    #[rstest]
    #[case("0 */1 * * *", "2026-11-25 10:00:00")]
    #[case("0 */6 * * *", "2026-11-25 12:00:00")]
    #[case("0 2 * * *", "2026-11-26 02:00:00")]
    #[case("0 3 * * *", "2026-11-26 03:00:00")]
    #[case("*/10 * * * * *", "2026-11-25 09:30:10")]
    fn next_fire_in_time_zone(#[case] pattern: &str, #[case] expected: &str) {
        let s = Schedule::parse(pattern).unwrap();
        let now = Shanghai.with_ymd_and_hms(2026, 11, 25, 9, 30, 0).unwrap();
        let next = s.next_after(&now).unwrap();
        assert_eq!(next.format("%Y-%m-%d %H:%M:%S").to_string(), expected);
    }

    // Bad patterns are errors with a reason; impossible dates never fire.
    #[rstest]
    #[case("0 */1 * *", "4 fields")]
    #[case("61 * * * *", "")]
    #[case("0 0 30 2 *", "never fires")]
    #[case("* * * * * * * *", "8 fields")]
    fn rejects(#[case] pattern: &str, #[case] reason: &str) {
        let err = Schedule::parse(pattern).unwrap_err();
        assert!(err.0.contains(reason), "{pattern}: {err}");
    }

    // A weekday-only schedule's longest interval is the weekend.
    #[test]
    fn longest_interval_spans_weekend() {
        let s = Schedule::parse("0 9 * * 1-5").unwrap();
        let now = Shanghai.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
        assert_eq!(
            s.longest_interval(&now),
            Some(Duration::from_secs(3 * 86_400))
        );
    }
}
