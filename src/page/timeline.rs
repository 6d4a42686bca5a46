//! Inline SVG for the page: a collection's timeline (archives, gaps, failed runs on a
//! time axis) and small bar charts of numbers per run. Pure; no text inside the
//! drawings but `<title>` tooltips, so they scale to any width.

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};

use super::html::escape;
use super::{CollectionView, Span};

/// The drawing's width in SVG units; it is scaled to the page's width.
const WIDTH: f64 = 1000.0;
/// The narrowest mark, so a short window stays visible on a long axis.
const MIN_MARK: f64 = 3.0;

/// The time axis of a timeline: `start` at x = 0, `end` at x = [`WIDTH`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Axis {
    /// An axis around everything `c` shows and `now`, with a little room at both
    /// ends.
    pub fn of(c: &CollectionView, now: DateTime<Utc>) -> Axis {
        let mut times = vec![now];
        for a in &c.archives {
            times.extend(a.from);
            times.push(a.to);
        }
        for s in c.gaps.iter().chain(&c.failed) {
            times.extend(s.from);
            times.extend(s.to);
        }
        let end = times.iter().max().copied().unwrap_or(now);
        // A short history is drawn at the right, ending now, rather than stretched.
        let start = times
            .iter()
            .min()
            .copied()
            .unwrap_or(now)
            .min(end - TimeDelta::minutes(1));
        let pad = (end - start) / 50;
        Axis {
            start: start - pad,
            end: end + pad,
        }
    }

    /// The x of `t`, clamped to the drawing.
    pub fn x(&self, t: DateTime<Utc>) -> f64 {
        let total = (self.end - self.start).num_milliseconds().max(1) as f64;
        let at = (t - self.start).num_milliseconds() as f64;
        (at / total * WIDTH).clamp(0.0, WIDTH)
    }

    /// x and width of the period `from`..`to` (an open start is the axis' start).
    fn mark(&self, from: Option<DateTime<Utc>>, to: DateTime<Utc>) -> (f64, f64) {
        let a = from.map_or(0.0, |f| self.x(f));
        let b = self.x(to).max(a);
        let w = (b - a).max(MIN_MARK);
        (a.min(WIDTH - w), w)
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn attr_time(name: &str, t: Option<DateTime<Utc>>) -> String {
    t.map(|t| format!(" {name}=\"{}\"", stamp(t)))
        .unwrap_or_default()
}

/// The timeline of one collection: archives (and gaps between them) on the upper
/// lane, failed runs on the lower one. Each mark carries its times as data
/// attributes, and a tooltip. `label(t)` formats a time for people.
pub fn timeline(
    c: &CollectionView,
    axis: &Axis,
    now: DateTime<Utc>,
    label: &dyn Fn(DateTime<Utc>) -> String,
    t: &super::i18n::Text,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"timeline\" viewBox=\"0 0 {WIDTH} 34\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"{}\" data-start=\"{}\" data-end=\"{}\">\
         <rect class=\"lane\" x=\"0\" y=\"2\" width=\"{WIDTH}\" height=\"18\"/>\
         <rect class=\"lane\" x=\"0\" y=\"24\" width=\"{WIDTH}\" height=\"8\"/>",
        escape(&format!("{}.{}", c.database, c.collection)),
        stamp(axis.start),
        stamp(axis.end),
    );
    for a in &c.archives {
        let (x, w) = axis.mark(a.from, a.to);
        let _ = write!(
            out,
            "<rect class=\"archive\" x=\"{x:.1}\" y=\"2\" width=\"{w:.1}\" height=\"18\" \
             data-archive=\"{}\"{}{}><title>{} {} .. {}</title></rect>",
            escape(&a.name),
            attr_time("data-from", a.from),
            attr_time("data-to", Some(a.to)),
            escape(&a.name),
            a.from.map(label).unwrap_or_default(),
            label(a.to),
        );
    }
    let span = |out: &mut String, class: &str, s: &Span, y: u32, h: u32, what: &str| {
        let to = s.to.unwrap_or(now);
        let (x, w) = axis.mark(s.from, to);
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{h}\"{}{}>\
             <title>{what} {} .. {}: {}</title></rect>",
            attr_time("data-from", s.from),
            attr_time("data-to", s.to),
            s.from.map(label).unwrap_or_default(),
            s.to.map_or_else(|| t.until_now.to_string(), label),
            escape(&s.reason),
        );
    };
    for g in &c.gaps {
        span(&mut out, "gap", g, 2, 18, t.gap);
    }
    for f in &c.failed {
        span(&mut out, "failed", f, 24, 8, t.failed_window);
    }
    let x = axis.x(now);
    let _ = write!(
        out,
        "<line class=\"now\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"0\" y2=\"34\"/></svg>"
    );
    out
}

/// Bars of `values` (oldest first), each with a tooltip from `tip`.
pub fn bars(class: &str, values: &[(u64, String)]) -> String {
    let max = values.iter().map(|v| v.0).max().unwrap_or(0).max(1) as f64;
    let n = values.len().max(1) as f64;
    let step = 200.0 / n;
    let w = (step * 0.8).max(1.0);
    let mut out = format!(
        "<svg class=\"bars {}\" viewBox=\"0 0 200 40\" preserveAspectRatio=\"none\" role=\"img\">",
        escape(class)
    );
    for (i, (v, tip)) in values.iter().enumerate() {
        let h = (*v as f64 / max * 38.0).max(if *v > 0 { 1.0 } else { 0.0 });
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" data-value=\"{v}\">\
             <title>{}</title></rect>",
            i as f64 * step,
            40.0 - h,
            escape(tip)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    // Times map linearly onto the drawing and stay inside it; a tiny window still
    // gets a visible mark.
    #[test]
    fn axis_maps_and_clamps() {
        let axis = Axis {
            start: t("2026-12-01T00:00:00Z"),
            end: t("2026-12-01T10:00:00Z"),
        };
        assert_eq!(axis.x(t("2026-12-01T05:00:00Z")), 500.0);
        assert_eq!(axis.x(t("2026-11-30T00:00:00Z")), 0.0);
        assert_eq!(axis.x(t("2026-12-02T00:00:00Z")), WIDTH);
        let (x, w) = axis.mark(Some(t("2026-12-01T05:00:00Z")), t("2026-12-01T05:00:01Z"));
        assert_eq!((x, w), (500.0, MIN_MARK));
        let (x, _) = axis.mark(None, t("2026-12-01T05:00:00Z"));
        assert_eq!(x, 0.0, "an open start begins at the axis' start");
    }

    // An axis ends just after now; a short history is drawn over at least a minute.
    #[test]
    fn axis_ends_now_and_spans_a_minute() {
        let now = t("2026-12-01T10:00:00Z");
        let axis = Axis::of(&CollectionView::default(), now);
        assert!(axis.end > now && axis.end - now < TimeDelta::seconds(2));
        assert!(axis.end - axis.start >= TimeDelta::minutes(1));
        assert!(axis.x(now) > 950.0);
    }

    // The tallest bar fills the height; zero stays empty; tooltips are escaped.
    #[test]
    fn bars_scale_to_the_largest() {
        let svg = bars(
            "docs",
            &[(0, "a".into()), (10, "<b>".into()), (5, "c".into())],
        );
        assert!(svg.contains("height=\"38.0\" data-value=\"10\""), "{svg}");
        assert!(svg.contains("height=\"0.0\" data-value=\"0\""), "{svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
    }
}
