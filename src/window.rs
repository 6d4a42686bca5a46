//! The time window a run exports, computed from the policy, the watermark and now.
//! Pure: the clock is an argument.

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::policy::{Initial, Mode, WindowSpec};

/// A half-open interval `[from, to)` of the time field; `from: None` means unbounded.
/// Snapshot runs have no window at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub from: Option<DateTime<Utc>>,
    pub to: DateTime<Utc>,
}

impl TimeWindow {
    /// True when no document can fall inside.
    pub fn is_empty(&self) -> bool {
        self.from.is_some_and(|f| f >= self.to)
    }
}

/// What one collection's run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Documents whose time field lies in the window.
    Window(TimeWindow),
    /// The whole collection.
    Snapshot,
}

/// The extent of a run at `now`. `watermark` is the end of the collection's last
/// successful window, if any.
pub fn compute(
    mode: Mode,
    spec: &WindowSpec,
    tz: Tz,
    watermark: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Extent {
    if mode == Mode::Snapshot {
        return Extent::Snapshot;
    }
    let to = now - spec.settle.as_chrono();
    let from = match watermark {
        Some(w) => Some(w - spec.overlap.as_chrono()),
        None => match spec.initial {
            Initial::All => None,
            Initial::Today => Some(start_of_day(now, tz)),
            Initial::Ago(d) => Some(now - d.as_chrono()),
        },
    };
    Extent::Window(TimeWindow { from, to })
}

/// Midnight of `now`'s day in `tz`, as UTC. Where midnight does not exist (a DST jump
/// at 00:00) the day starts at the first instant that does.
pub fn start_of_day(now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let date = now.with_timezone(&tz).date_naive();
    let midnight = date.and_time(NaiveTime::MIN);
    if let Some(t) = tz.from_local_datetime(&midnight).earliest() {
        return t.with_timezone(&Utc);
    }
    // Walk forward minute by minute to the first valid local time (at most a few hours).
    (1..=24 * 60)
        .filter_map(|m| {
            tz.from_local_datetime(&(midnight + chrono::TimeDelta::minutes(m)))
                .earliest()
        })
        .next()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::HumanDuration;
    use rstest::rstest;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn spec(initial: &str, settle: &str, overlap: &str) -> WindowSpec {
        WindowSpec {
            initial: initial.parse().unwrap(),
            settle: settle.parse::<HumanDuration>().unwrap(),
            overlap: overlap.parse::<HumanDuration>().unwrap(),
        }
    }

    const NOW: &str = "2026-11-25T09:30:00Z"; // 17:30 in Shanghai

    // First runs start where `initial` says; later runs at the watermark minus overlap;
    // every window ends `settle` before now.
    #[rstest]
    #[case(
        "today",
        "0s",
        "0s",
        None,
        Some("2026-11-24T16:00:00Z"),
        "2026-11-25T09:30:00Z"
    )]
    #[case("all", "1m", "0s", None, None, "2026-11-25T09:29:00Z")]
    #[case(
        "7d",
        "0s",
        "0s",
        None,
        Some("2026-11-18T09:30:00Z"),
        "2026-11-25T09:30:00Z"
    )]
    #[case(
        "today",
        "1m",
        "0s",
        Some("2026-11-25T08:00:00Z"),
        Some("2026-11-25T08:00:00Z"),
        "2026-11-25T09:29:00Z"
    )]
    #[case(
        "today",
        "0s",
        "5m",
        Some("2026-11-25T08:00:00Z"),
        Some("2026-11-25T07:55:00Z"),
        "2026-11-25T09:30:00Z"
    )]
    fn windows(
        #[case] initial: &str,
        #[case] settle: &str,
        #[case] overlap: &str,
        #[case] watermark: Option<&str>,
        #[case] from: Option<&str>,
        #[case] to: &str,
    ) {
        let got = compute(
            Mode::Incremental,
            &spec(initial, settle, overlap),
            chrono_tz::Asia::Shanghai,
            watermark.map(t),
            t(NOW),
        );
        assert_eq!(
            got,
            Extent::Window(TimeWindow {
                from: from.map(t),
                to: t(to)
            })
        );
    }

    // Snapshot mode ignores windows and watermarks.
    #[test]
    fn snapshot_has_no_window() {
        let got = compute(
            Mode::Snapshot,
            &spec("today", "1m", "0s"),
            Tz::UTC,
            Some(t(NOW)),
            t(NOW),
        );
        assert_eq!(got, Extent::Snapshot);
    }

    // A watermark at or past now-settle yields an empty window, never a negative one.
    #[test]
    fn caught_up_window_is_empty() {
        let Extent::Window(w) = compute(
            Mode::Incremental,
            &spec("today", "1m", "0s"),
            Tz::UTC,
            Some(t("2026-11-25T09:29:30Z")),
            t(NOW),
        ) else {
            panic!("incremental mode must give a window")
        };
        assert!(w.is_empty());
    }

    // Where midnight is skipped by DST, the day starts at the first real instant.
    #[test]
    fn start_of_day_across_dst_gap() {
        // America/Santiago springs forward at 00:00 on 2026-09-06 (to 01:00).
        let tz: Tz = "America/Santiago".parse().unwrap();
        let start = start_of_day(t("2026-09-06T12:00:00Z"), tz);
        assert_eq!(
            start.with_timezone(&tz).format("%H:%M").to_string(),
            "01:00"
        );
    }
}
