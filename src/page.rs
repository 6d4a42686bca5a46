//! The status page at `/` of the admin endpoint, for people: per policy and
//! collection a timeline of the windows covered (archives, gaps, failed runs), the
//! restorable range, the last and next run and numbers per run; the disk and its
//! forecast; the latest drills and verifications; the active alerts. [`render`] is a
//! pure function of a [`Page`] (what [`gather`] reads) and a language: server-side
//! HTML with inline SVG and CSS, nothing fetched from elsewhere, so it works offline.

pub mod gather;
pub mod html;
pub mod i18n;
pub mod recent;
pub mod timeline;

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use html::escape;
pub use i18n::Lang;
use i18n::Text;

/// How often the page reloads itself, in seconds.
pub const REFRESH_SECS: u32 = 60;

/// Everything the page shows. Free text in it is already redacted.
#[derive(Debug, Clone)]
pub struct Page {
    pub now: DateTime<Utc>,
    /// The zone times are shown in.
    pub timezone: Tz,
    pub running: bool,
    pub policies: Vec<PolicyView>,
    pub disk: Option<DiskView>,
    pub alerts: Vec<AlertView>,
    pub drills: Vec<recent::Drill>,
    pub verifications: Vec<recent::Verification>,
}

#[derive(Debug, Clone)]
pub struct PolicyView {
    pub name: String,
    pub enabled: bool,
    pub schedule: String,
    pub timezone: String,
    pub next_run: Option<DateTime<Utc>>,
    pub collections: Vec<CollectionView>,
}

#[derive(Debug, Clone, Default)]
pub struct CollectionView {
    pub database: String,
    pub collection: String,
    /// Restores bring it back as it was (chains), rather than its windows' documents.
    pub exact: bool,
    pub restorable_from: Option<DateTime<Utc>>,
    pub restorable_to: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Oldest first.
    pub archives: Vec<ArchiveBar>,
    /// Periods within the covered range that do not restore.
    pub gaps: Vec<Span>,
    /// Windows that runs failed to export.
    pub failed: Vec<Span>,
}

/// One archive on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveBar {
    pub name: String,
    /// Absent: everything up to `to`.
    pub from: Option<DateTime<Utc>>,
    pub to: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub documents: u64,
    pub bytes: u64,
}

/// A period on the timeline, and why it is marked.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub from: Option<DateTime<Utc>>,
    /// Absent: until now.
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiskView {
    pub available: u64,
    pub total: u64,
    pub used_by_backups: u64,
    /// Bytes per day written by runs lately (before retention deletes any).
    pub growth_per_day: Option<f64>,
}

impl DiskView {
    /// Days until the free space is used up at the recent growth rate.
    pub fn days_until_full(&self) -> Option<f64> {
        self.growth_per_day
            .filter(|g| *g > 0.0)
            .map(|g| self.available as f64 / g)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    pub key: String,
    pub title: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

const STYLE: &str = "\
:root{--fg:#1d2330;--muted:#5d6676;--line:#d9dde5;--ok:#2e7d32;--bad:#c62828;--bar:#3b73b9}\
*{box-sizing:border-box}\
body{margin:0;overflow-wrap:anywhere;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans CJK SC','Microsoft YaHei',sans-serif;color:var(--fg);background:#f5f6f8}\
main{max-width:1100px;margin:0 auto;padding:12px}\
header h1{font-size:1.4em;margin:.2em 0}\
.meta,.muted{color:var(--muted);font-size:.9em}\
section.card,article.policy{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:12px 0}\
h2{font-size:1.15em;margin:.2em 0 .4em}h3{font-size:1em;margin:.8em 0 .2em;word-break:break-all}\
.ok{color:var(--ok)}.bad{color:var(--bad);font-weight:600}\
.collection{border-top:1px solid var(--line);padding-top:6px}\
svg.timeline{width:100%;height:40px;display:block}\
svg.timeline .lane{fill:#eef0f4}svg.timeline .archive{fill:var(--bar)}\
svg.timeline .gap{fill:#ffcdd2;stroke:var(--bad);stroke-width:1;stroke-dasharray:4 2}\
svg.timeline .failed{fill:var(--bad)}svg.timeline .now{stroke:#333;stroke-width:1}\
.axis{display:flex;justify-content:space-between;color:var(--muted);font-size:.8em}\
.legend span{display:inline-block;margin-right:1em;font-size:.85em}\
.legend i{display:inline-block;width:1em;height:.8em;margin-right:.3em;vertical-align:middle}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts figure{margin:0;flex:1 1 240px}\
.charts figcaption{font-size:.85em;color:var(--muted)}\
svg.bars{width:100%;height:40px;display:block;background:#fafbfc}svg.bars rect{fill:var(--bar)}\
svg.usage{background:#eef0f4}svg.usage rect.bad{fill:var(--bad)}\
ul{margin:.2em 0;padding-left:1.2em}\
.table{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9em}\
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid var(--line);vertical-align:top}\
@media (max-width:600px){body{font-size:14px}main{padding:6px}}";

/// The page in `lang`, as a complete HTML document.
pub fn render(page: &Page, lang: Lang) -> String {
    let t = lang.text();
    let fmt = |d: DateTime<Utc>| {
        d.with_timezone(&page.timezone)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>\
         <header><h1>{}</h1><p class=\"meta\">{} {} ({} {}) · {} · <span class=\"{}\">{}</span></p></header>",
        lang.tag(),
        escape(t.title),
        escape(t.title),
        t.generated,
        fmt(page.now),
        t.times_in,
        escape(page.timezone.name()),
        t.refreshes,
        if page.running { "ok" } else { "bad" },
        if page.running {
            t.service_running
        } else {
            t.service_stopped
        },
    );
    alerts(&mut out, page, t, &fmt);
    disk(&mut out, page, t);
    if page.policies.is_empty() {
        let _ = write!(
            out,
            "<section class=\"card\"><p>{}</p></section>",
            t.no_policies
        );
    }
    for p in &page.policies {
        policy(&mut out, page, p, t, &fmt);
    }
    drills(&mut out, page, t, &fmt);
    verifications(&mut out, page, t, &fmt);
    out.push_str("</main></body></html>\n");
    out
}

type Fmt<'a> = dyn Fn(DateTime<Utc>) -> String + 'a;

fn alerts(out: &mut String, page: &Page, t: &Text, fmt: &Fmt) {
    let _ = write!(
        out,
        "<section class=\"card\" id=\"alerts\"><h2>{}</h2>",
        t.alerts
    );
    if page.alerts.is_empty() {
        let _ = write!(out, "<p class=\"ok\">{}</p>", t.no_alerts);
    } else {
        out.push_str("<ul>");
        for a in &page.alerts {
            let _ = write!(
                out,
                "<li class=\"alert\" data-key=\"{}\"><span class=\"bad\">{}</span>{}{}</li>",
                escape(&a.key),
                escape(&a.key),
                a.title
                    .as_ref()
                    .map(|x| format!(": {}", escape(x)))
                    .unwrap_or_default(),
                a.since
                    .map(|s| format!(" <span class=\"muted\">({} {})</span>", t.since, fmt(s)))
                    .unwrap_or_default(),
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
}

fn disk(out: &mut String, page: &Page, t: &Text) {
    let _ = write!(
        out,
        "<section class=\"card\" id=\"disk\"><h2>{}</h2>",
        t.disk
    );
    match &page.disk {
        None => {
            let _ = write!(out, "<p>{}</p>", t.disk_unknown);
        }
        Some(d) => {
            let used = d.total.saturating_sub(d.available);
            let pct = if d.total > 0 {
                used as f64 * 100.0 / d.total as f64
            } else {
                0.0
            };
            let _ = write!(
                out,
                "<svg class=\"bars usage\" viewBox=\"0 0 200 10\" preserveAspectRatio=\"none\" \
                 role=\"img\" style=\"height:12px\"><rect x=\"0\" y=\"0\" width=\"{:.1}\" height=\"10\" \
                 class=\"{}\"/></svg><p>{} {} {} · {} {}</p>",
                pct * 2.0,
                if pct >= 90.0 { "bad" } else { "used" },
                crate::human::size(d.available),
                t.free_of,
                crate::human::size(d.total),
                crate::human::size(d.used_by_backups),
                t.used_by_backups,
            );
            let growth = match (d.growth_per_day, d.days_until_full()) {
                (Some(g), Some(days)) if g > 0.0 => format!(
                    "{}: {} {} · <span class=\"forecast\" data-days=\"{days:.1}\">{} {}</span>",
                    t.growth,
                    crate::human::size(g as u64),
                    t.per_day,
                    match days {
                        d if d > 3650.0 => "> 3650".to_string(),
                        d if d >= 100.0 => format!("{d:.0}"),
                        d => format!("{d:.1}"),
                    },
                    t.days_until_full
                ),
                _ => format!("{}: {}", t.growth, t.no_growth),
            };
            let _ = write!(out, "<p class=\"muted\">{growth}</p>");
        }
    }
    out.push_str("</section>");
}

fn policy(out: &mut String, page: &Page, p: &PolicyView, t: &Text, fmt: &Fmt) {
    let _ = write!(
        out,
        "<article class=\"policy\" data-policy=\"{}\"><h2>{} {}{}</h2>\
         <p class=\"muted\">{} <code>{}</code> ({}) · {}: <span class=\"next-run\">{}</span></p>",
        escape(&p.name),
        t.policy,
        escape(&p.name),
        if p.enabled {
            String::new()
        } else {
            format!(" <span class=\"muted\">({})</span>", t.disabled)
        },
        t.schedule,
        escape(&p.schedule),
        escape(&p.timezone),
        t.next_run,
        p.next_run.map_or_else(|| "-".to_string(), fmt),
    );
    for c in &p.collections {
        collection(out, page, c, t, fmt);
    }
    out.push_str("</article>");
}

fn collection(out: &mut String, page: &Page, c: &CollectionView, t: &Text, fmt: &Fmt) {
    let _ = write!(
        out,
        "<section class=\"collection\" data-database=\"{}\" data-collection=\"{}\"><h3>{}.{}</h3>",
        escape(&c.database),
        escape(&c.collection),
        escape(&c.database),
        escape(&c.collection),
    );
    let stamp = |d: Option<DateTime<Utc>>| {
        d.map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_default()
    };
    let range = match (c.restorable_from, c.restorable_to) {
        (Some(a), Some(b)) => format!(
            "{}, {} .. {}",
            if c.exact {
                t.as_it_was
            } else {
                t.documents_of_windows
            },
            fmt(a),
            fmt(b)
        ),
        _ => t.nothing_yet.to_string(),
    };
    let _ = write!(
        out,
        "<p class=\"restorable\" data-from=\"{}\" data-to=\"{}\"><b>{}</b>: {range}</p>",
        stamp(c.restorable_from),
        stamp(c.restorable_to),
        t.restorable,
    );
    // The last run: whichever of the last success and failure is newer.
    let last = match (c.last_success, c.last_failure) {
        (Some(s), Some(f)) if f > s => Some((f, false)),
        (Some(s), _) => Some((s, true)),
        (None, Some(f)) => Some((f, false)),
        (None, None) => None,
    };
    let _ = write!(
        out,
        "<p>{}: {} · {} {}{}</p>",
        t.last_run,
        match last {
            None => t.never.to_string(),
            Some((at, true)) => format!("{} <span class=\"ok\">{}</span>", fmt(at), t.ok),
            Some((at, false)) => format!("{} <span class=\"bad\">{}</span>", fmt(at), t.failed),
        },
        c.archives.len(),
        if c.archives.len() == 1 {
            t.archive
        } else {
            t.archives
        },
        if c.consecutive_failures > 0 {
            format!(
                " · <span class=\"bad\">{} {}</span>",
                c.consecutive_failures, t.consecutive_failures
            )
        } else {
            String::new()
        },
    );
    if c.consecutive_failures > 0
        && let Some(e) = &c.last_error
    {
        let _ = write!(
            out,
            "<p class=\"muted last-error\">{}: {}</p>",
            t.last_error,
            escape(e)
        );
    }
    let axis = timeline::Axis::of(c, page.now);
    out.push_str(&timeline::timeline(c, &axis, page.now, fmt, t));
    let _ = write!(
        out,
        "<div class=\"axis\"><span>{}</span><span>{}</span></div>\
         <div class=\"legend\"><span><i style=\"background:var(--bar)\"></i>{}</span>\
         <span><i style=\"background:#ffcdd2;border:1px dashed var(--bad)\"></i>{}</span>\
         <span><i style=\"background:var(--bad)\"></i>{}</span></div>",
        fmt(axis.start),
        fmt(axis.end),
        t.legend_archive,
        t.legend_gap,
        t.legend_failed,
    );
    let spans = c
        .gaps
        .iter()
        .map(|g| ("gap-text", t.gap, g))
        .chain(c.failed.iter().map(|f| ("failed-text", t.failed_window, f)));
    let mut list = String::new();
    for (class, what, s) in spans {
        let _ = write!(
            list,
            "<li class=\"{class}\"><span class=\"bad\">{what}</span> {} .. {}: {}</li>",
            s.from.map(fmt).unwrap_or_default(),
            s.to.map_or_else(|| t.until_now.to_string(), fmt),
            escape(&shorten(&s.reason, 200)),
        );
    }
    if !list.is_empty() {
        let _ = write!(out, "<ul>{list}</ul>");
    }
    if c.archives.is_empty() {
        let _ = write!(out, "<p class=\"muted\">{}</p>", t.no_runs);
    } else {
        let mut runs: Vec<&ArchiveBar> = c.archives.iter().collect();
        runs.sort_by_key(|a| a.finished_at);
        let docs: Vec<(u64, String)> = runs
            .iter()
            .map(|a| {
                (
                    a.documents,
                    format!(
                        "{} {}",
                        fmt(a.finished_at),
                        crate::human::count(a.documents)
                    ),
                )
            })
            .collect();
        let bytes: Vec<(u64, String)> = runs
            .iter()
            .map(|a| {
                (
                    a.bytes,
                    format!("{} {}", fmt(a.finished_at), crate::human::size(a.bytes)),
                )
            })
            .collect();
        let last = runs.last().expect("not empty");
        let _ = write!(
            out,
            "<div class=\"charts\"><figure>{}<figcaption>{}: {}</figcaption></figure>\
             <figure>{}<figcaption>{}: {}</figcaption></figure></div>",
            timeline::bars("documents", &docs),
            t.documents_per_run,
            crate::human::count(last.documents),
            timeline::bars("bytes", &bytes),
            t.bytes_per_run,
            crate::human::size(last.bytes),
        );
    }
    out.push_str("</section>");
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn result(ok: bool, t: &Text) -> String {
    if ok {
        format!("<span class=\"ok\">{}</span>", t.ok)
    } else {
        format!("<span class=\"bad\">{}</span>", t.failed)
    }
}

fn drills(out: &mut String, page: &Page, t: &Text, fmt: &Fmt) {
    let _ = write!(
        out,
        "<section class=\"card\" id=\"drills\"><h2>{}</h2>",
        t.drills
    );
    if page.drills.is_empty() {
        let _ = write!(out, "<p class=\"muted\">{}</p>", t.no_drills);
    } else {
        let _ = write!(
            out,
            "<div class=\"table\"><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
             <th>{}</th><th>{}</th><th>{}</th></tr>",
            t.time, t.policy, t.result, t.database, t.collections, t.elapsed, t.problems
        );
        for d in &page.drills {
            let collections: Vec<String> = d
                .collections
                .iter()
                .map(|c| {
                    format!(
                        "{}{}{}",
                        escape(&c.collection),
                        c.documents.map(|n| format!(" ({n})")).unwrap_or_default(),
                        if c.ok { "" } else { " ✗" }
                    )
                })
                .collect();
            let problems: Vec<String> =
                d.problems
                    .iter()
                    .cloned()
                    .chain(d.collections.iter().filter_map(|c| {
                        c.problem.as_ref().map(|p| format!("{}: {p}", c.collection))
                    }))
                    .map(|p| escape(&p))
                    .collect();
            let _ = write!(
                out,
                "<tr class=\"drill\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                fmt(d.at),
                escape(&d.policy),
                result(d.ok, t),
                escape(&d.database),
                collections.join(", "),
                d.elapsed_ms
                    .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default(),
                problems.join("<br>"),
            );
        }
        out.push_str("</table></div>");
    }
    out.push_str("</section>");
}

fn verifications(out: &mut String, page: &Page, t: &Text, fmt: &Fmt) {
    let _ = write!(
        out,
        "<section class=\"card\" id=\"verifications\"><h2>{}</h2>",
        t.verifications
    );
    if page.verifications.is_empty() {
        let _ = write!(out, "<p class=\"muted\">{}</p>", t.no_verifications);
    } else {
        let _ = write!(
            out,
            "<div class=\"table\"><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            t.time, t.archive, t.result, t.size, t.problems
        );
        for v in &page.verifications {
            let problems: Vec<String> = v.all_problems().iter().map(|p| escape(p)).collect();
            let _ = write!(
                out,
                "<tr class=\"verification\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                fmt(v.at),
                escape(&v.archive),
                result(v.ok, t),
                v.bytes.map(crate::human::size).unwrap_or_default(),
                problems.join("<br>"),
            );
        }
        out.push_str("</table></div>");
    }
    out.push_str("</section>");
}

#[cfg(test)]
mod tests;
