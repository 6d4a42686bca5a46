//! Counters of the service, rendered in the Prometheus text format for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the run-duration histogram.
const BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0,
];

type Key = (String, String);

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    runs: BTreeMap<(String, String, &'static str), u64>,
    documents: BTreeMap<Key, u64>,
    bytes: BTreeMap<Key, u64>,
    durations: BTreeMap<Key, Histogram>,
    last_success: BTreeMap<Key, f64>,
    skipped: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// How one collection's run ended, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    /// Exported: (documents, bytes).
    Success {
        documents: u64,
        bytes: u64,
    },
    Failure,
    /// Not started: another process (a `dcb run`) held the policy's lock.
    Locked,
}

impl RunResult {
    fn label(self) -> &'static str {
        match self {
            RunResult::Success { .. } => "success",
            RunResult::Failure => "failure",
            RunResult::Locked => "locked",
        }
    }
}

impl Metrics {
    /// One finished run of one collection, `seconds` long, at unix time `at`. A locked
    /// run exported nothing and is not in the duration histogram.
    pub fn record_run(
        &self,
        policy: &str,
        collection: &str,
        result: RunResult,
        seconds: f64,
        at: f64,
    ) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (policy.to_string(), collection.to_string());
        *m.runs
            .entry((key.0.clone(), key.1.clone(), result.label()))
            .or_default() += 1;
        match result {
            RunResult::Success { documents, bytes } => {
                *m.documents.entry(key.clone()).or_default() += documents;
                *m.bytes.entry(key.clone()).or_default() += bytes;
                m.last_success.insert(key.clone(), at);
            }
            RunResult::Failure => {}
            RunResult::Locked => return,
        }
        let h = m.durations.entry(key).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// A success recorded before this process started (from the state), unless a
    /// newer one is known.
    pub fn seed_last_success(&self, policy: &str, collection: &str, at: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let t = m
            .last_success
            .entry((policy.to_string(), collection.to_string()))
            .or_insert(at);
        *t = t.max(at);
    }

    /// A scheduled tick skipped because the policy's previous run was still going.
    pub fn record_skip(&self, policy: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.skipped.entry(policy.to_string()).or_default() += 1;
    }

    pub fn skipped(&self, policy: &str) -> u64 {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.skipped.get(policy).copied().unwrap_or(0)
    }

    /// The text exposition; `next_runs` are (policy, unix seconds).
    pub fn render(&self, next_runs: &[(String, f64)], up: bool) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = String::new();
        let pc = |p: &str, c: &str| format!("policy=\"{}\",collection=\"{}\"", esc(p), esc(c));
        header(&mut o, "dcb_up", "gauge", "1 while the service runs.");
        let _ = writeln!(o, "dcb_up {}", u8::from(up));
        header(
            &mut o,
            "dcb_runs_total",
            "counter",
            "Collection runs by result: success, failure, or locked (another process held the policy).",
        );
        for ((p, c, r), n) in &m.runs {
            let _ = writeln!(o, "dcb_runs_total{{{},result=\"{r}\"}} {n}", pc(p, c));
        }
        header(
            &mut o,
            "dcb_documents_total",
            "counter",
            "Documents exported.",
        );
        for ((p, c), n) in &m.documents {
            let _ = writeln!(o, "dcb_documents_total{{{}}} {n}", pc(p, c));
        }
        header(&mut o, "dcb_bytes_total", "counter", "BSON bytes exported.");
        for ((p, c), n) in &m.bytes {
            let _ = writeln!(o, "dcb_bytes_total{{{}}} {n}", pc(p, c));
        }
        header(
            &mut o,
            "dcb_run_duration_seconds",
            "histogram",
            "Duration of collection exports.",
        );
        for ((p, c), h) in &m.durations {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "dcb_run_duration_seconds_bucket{{{},le=\"{bound}\"}} {}",
                    pc(p, c),
                    h.counts[i]
                );
            }
            let _ = writeln!(
                o,
                "dcb_run_duration_seconds_bucket{{{},le=\"+Inf\"}} {}",
                pc(p, c),
                h.count
            );
            let _ = writeln!(o, "dcb_run_duration_seconds_sum{{{}}} {}", pc(p, c), h.sum);
            let _ = writeln!(
                o,
                "dcb_run_duration_seconds_count{{{}}} {}",
                pc(p, c),
                h.count
            );
        }
        header(
            &mut o,
            "dcb_last_success_timestamp_seconds",
            "gauge",
            "When the last successful export finished.",
        );
        for ((p, c), t) in &m.last_success {
            let _ = writeln!(o, "dcb_last_success_timestamp_seconds{{{}}} {t}", pc(p, c));
        }
        header(
            &mut o,
            "dcb_skipped_runs_total",
            "counter",
            "Scheduled runs skipped because the previous run was still going.",
        );
        for (p, n) in &m.skipped {
            let _ = writeln!(o, "dcb_skipped_runs_total{{policy=\"{}\"}} {n}", esc(p));
        }
        header(
            &mut o,
            "dcb_next_run_timestamp_seconds",
            "gauge",
            "When each policy runs next.",
        );
        for (p, t) in next_runs {
            let _ = writeln!(
                o,
                "dcb_next_run_timestamp_seconds{{policy=\"{}\"}} {t}",
                esc(p)
            );
        }
        o
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The exposition parses as Prometheus text and carries what was recorded.
    #[test]
    fn renders_parseable_text() {
        let m = Metrics::default();
        let ok = |documents, bytes| RunResult::Success { documents, bytes };
        m.record_run("hot", "api_logs", ok(10, 4000), 2.5, 1.7e9);
        m.record_run("hot", "api_logs", RunResult::Failure, 0.2, 1.7e9);
        m.record_run("hot", "api_logs", RunResult::Locked, 0.0, 1.7e9);
        m.record_run("hot", "we\"ird", ok(1, 1), 0.1, 1.7e9);
        m.record_skip("hot");
        let text = m.render(&[("hot".into(), 1.8e9)], true);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let find = |name: &str| scrape.samples.iter().filter(|s| s.metric == name).count();
        assert_eq!(find("dcb_runs_total"), 4);
        assert_eq!(find("dcb_documents_total"), 2);
        assert_eq!(find("dcb_next_run_timestamp_seconds"), 1);
        assert!(text.contains(
            "dcb_runs_total{policy=\"hot\",collection=\"api_logs\",result=\"failure\"} 1"
        ));
        assert!(text.contains(
            "dcb_run_duration_seconds_bucket{policy=\"hot\",collection=\"api_logs\",le=\"5\"} 2"
        ));
        assert!(text.contains(
            "dcb_run_duration_seconds_bucket{policy=\"hot\",collection=\"api_logs\",le=\"1\"} 1"
        ));
        assert!(text.contains("collection=\"we\\\"ird\""));
        // A locked run is counted as such, and is no export to time.
        assert!(text.contains(
            "dcb_runs_total{policy=\"hot\",collection=\"api_logs\",result=\"locked\"} 1"
        ));
        assert!(
            text.contains(
                "dcb_run_duration_seconds_count{policy=\"hot\",collection=\"api_logs\"} 2"
            )
        );
    }

    // A last success from the state shows before any run, and never hides a newer one.
    #[test]
    fn seeded_last_success() {
        let m = Metrics::default();
        m.seed_last_success("hot", "api_logs", 1.6e9);
        assert!(m.render(&[], true).contains(
            "dcb_last_success_timestamp_seconds{policy=\"hot\",collection=\"api_logs\"} 1600000000"
        ));
        m.record_run("hot", "api_logs", RunResult::Failure, 0.1, 1.7e9);
        m.seed_last_success("hot", "api_logs", 1.5e9);
        assert!(m.render(&[], true).contains("api_logs\"} 1600000000"));
    }
}
