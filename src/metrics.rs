//! Counters of the service, for `/metrics`: kept and rendered by `prometheus-client`
//! (the Prometheus project's Rust crate) in the OpenMetrics text format.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the run-duration histogram.
const BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Collection {
    policy: String,
    collection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    policy: String,
    collection: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

type Seconds = Gauge<f64, AtomicU64>;

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    up: Gauge,
    runs: Family<Outcome, Counter>,
    documents: Family<Collection, Counter>,
    bytes: Family<Collection, Counter>,
    durations: Family<Collection, Histogram, fn() -> Histogram>,
    last_success: Family<Collection, Seconds>,
    skipped: Family<PolicyLabel, Counter>,
    next_run: Family<PolicyLabel, Seconds>,
    drill_ok: Family<PolicyLabel, Gauge>,
    drill_last_success: Family<PolicyLabel, Seconds>,
    reverified: Family<ResultLabel, Counter>,
    reverified_bytes: Counter,
    reverify_corrupt: Gauge,
    reverify_last_pass: Seconds,
    /// Serialises the read-modify-write of gauges (seeding, rendering).
    lock: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            up: Gauge::default(),
            runs: Family::default(),
            documents: Family::default(),
            bytes: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            last_success: Family::default(),
            skipped: Family::default(),
            next_run: Family::default(),
            drill_ok: Family::default(),
            drill_last_success: Family::default(),
            reverified: Family::default(),
            reverified_bytes: Counter::default(),
            reverify_corrupt: Gauge::default(),
            reverify_last_pass: Seconds::default(),
            lock: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register("dcb_up", "1 while the service runs", m.up.clone());
        registry.register(
            "dcb_runs",
            "Collection runs by result: success, failure, or locked (another process held the policy)",
            m.runs.clone(),
        );
        registry.register("dcb_documents", "Documents exported", m.documents.clone());
        registry.register("dcb_bytes", "BSON bytes exported", m.bytes.clone());
        registry.register(
            "dcb_run_duration_seconds",
            "Duration of collection exports",
            m.durations.clone(),
        );
        registry.register(
            "dcb_last_success_timestamp_seconds",
            "When the last successful export finished",
            m.last_success.clone(),
        );
        registry.register(
            "dcb_skipped_runs",
            "Scheduled runs skipped because the previous run was still going",
            m.skipped.clone(),
        );
        registry.register(
            "dcb_next_run_timestamp_seconds",
            "When each policy runs next",
            m.next_run.clone(),
        );
        registry.register(
            "dcb_drill_ok",
            "1 when the policy's last restore drill passed, 0 when it failed",
            m.drill_ok.clone(),
        );
        registry.register(
            "dcb_drill_last_success_timestamp_seconds",
            "When the policy's last passing restore drill ran",
            m.drill_last_success.clone(),
        );
        registry.register(
            "dcb_reverify_archives",
            "Archives re-read by periodic re-verification, by result: ok or corrupt",
            m.reverified.clone(),
        );
        registry.register(
            "dcb_reverify_bytes",
            "Archive bytes re-read by periodic re-verification",
            m.reverified_bytes.clone(),
        );
        registry.register(
            "dcb_reverify_corrupt_archives",
            "Archives found corrupt at their last re-reading",
            m.reverify_corrupt.clone(),
        );
        registry.register(
            "dcb_reverify_last_pass_timestamp_seconds",
            "When the last re-verification pass ran",
            m.reverify_last_pass.clone(),
        );
        Metrics { registry, ..m }
    }
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

fn collection(policy: &str, collection: &str) -> Collection {
    Collection {
        policy: policy.to_string(),
        collection: collection.to_string(),
    }
}

impl Metrics {
    /// One finished run of one collection, `seconds` long, at unix time `at`. A locked
    /// run exported nothing and is not in the duration histogram.
    pub fn record_run(&self, policy: &str, coll: &str, result: RunResult, seconds: f64, at: f64) {
        let key = collection(policy, coll);
        self.runs
            .get_or_create(&Outcome {
                policy: policy.to_string(),
                collection: coll.to_string(),
                result: result.label(),
            })
            .inc();
        match result {
            RunResult::Success { documents, bytes } => {
                self.documents.get_or_create(&key).inc_by(documents);
                self.bytes.get_or_create(&key).inc_by(bytes);
                self.last_success.get_or_create(&key).set(at);
            }
            RunResult::Failure => {}
            RunResult::Locked => return,
        }
        self.durations.get_or_create(&key).observe(seconds);
    }

    /// A success recorded before this process started (from the state), unless a
    /// newer one is known.
    pub fn seed_last_success(&self, policy: &str, coll: &str, at: f64) {
        let _turn = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let gauge = self.last_success.get_or_create(&collection(policy, coll));
        if gauge.get() < at {
            gauge.set(at);
        }
    }

    /// A scheduled tick skipped because the policy's previous run was still going.
    pub fn record_skip(&self, policy: &str) {
        self.skipped
            .get_or_create(&PolicyLabel {
                policy: policy.to_string(),
            })
            .inc();
    }

    pub fn skipped(&self, policy: &str) -> u64 {
        self.skipped
            .get_or_create(&PolicyLabel {
                policy: policy.to_string(),
            })
            .get()
    }

    /// A restore drill of `policy` ended at unix time `at`.
    pub fn record_drill(&self, policy: &str, ok: bool, at: f64) {
        let label = PolicyLabel {
            policy: policy.to_string(),
        };
        self.drill_ok.get_or_create(&label).set(i64::from(ok));
        if ok {
            self.drill_last_success.get_or_create(&label).set(at);
        }
    }

    /// A re-verification pass at unix time `at`: archives read intact and corrupt,
    /// bytes read, and how many are corrupt now.
    pub fn record_reverify(&self, ok: u64, corrupt: u64, bytes: u64, corrupt_now: u64, at: f64) {
        self.reverified
            .get_or_create(&ResultLabel { result: "ok" })
            .inc_by(ok);
        self.reverified
            .get_or_create(&ResultLabel { result: "corrupt" })
            .inc_by(corrupt);
        self.reverified_bytes.inc_by(bytes);
        self.reverify_corrupt
            .set(i64::try_from(corrupt_now).unwrap_or(i64::MAX));
        self.reverify_last_pass.set(at);
    }

    /// The exposition (OpenMetrics text); `next_runs` are (policy, unix seconds).
    pub fn render(&self, next_runs: &[(String, f64)], up: bool) -> String {
        let _turn = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.up.set(i64::from(up));
        self.next_run.clear();
        for (policy, t) in next_runs {
            self.next_run
                .get_or_create(&PolicyLabel {
                    policy: policy.clone(),
                })
                .set(*t);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot render the metrics");
        }
        out
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    /// The samples a Prometheus server reads from `text`: name, labels, value. In
    /// OpenMetrics a counter family `x` has samples `x_total`.
    fn scrape(text: &str) -> prometheus_parse::Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).unwrap()
    }

    // The exposition is OpenMetrics text that Prometheus reads, and carries what was
    // recorded: counters by their family name, histogram bounds as floats.
    #[test]
    fn renders_openmetrics_text() {
        let m = Metrics::default();
        let ok = |documents, bytes| RunResult::Success { documents, bytes };
        m.record_run("hot", "api_logs", ok(10, 4000), 2.5, 1.7e9);
        m.record_run("hot", "api_logs", RunResult::Failure, 0.2, 1.7e9);
        m.record_run("hot", "api_logs", RunResult::Locked, 0.0, 1.7e9);
        m.record_run("hot", "we\"ird", ok(1, 1), 0.1, 1.7e9);
        m.record_skip("hot");
        let text = m.render(&[("hot".into(), 1.8e9)], true);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE dcb_runs counter\n"), "{text}");
        let scrape = scrape(&text);
        let find = |name: &str| scrape.samples.iter().filter(|s| s.metric == name).count();
        assert_eq!(find("dcb_runs_total"), 4);
        assert_eq!(find("dcb_documents_total"), 2);
        assert_eq!(find("dcb_next_run_timestamp_seconds"), 1);
        assert!(text.contains(
            "dcb_runs_total{policy=\"hot\",collection=\"api_logs\",result=\"failure\"} 1"
        ));
        assert!(text.contains(
            "dcb_run_duration_seconds_bucket{le=\"5.0\",policy=\"hot\",collection=\"api_logs\"} 2"
        ), "{text}");
        assert!(text.contains(
            "dcb_run_duration_seconds_bucket{le=\"1.0\",policy=\"hot\",collection=\"api_logs\"} 1"
        ));
        assert!(text.contains("collection=\"we\\\"ird\""), "{text}");
        // A locked run is counted as such, and is no export to time.
        assert!(text.contains(
            "dcb_runs_total{policy=\"hot\",collection=\"api_logs\",result=\"locked\"} 1"
        ));
        assert!(
            text.contains(
                "dcb_run_duration_seconds_count{policy=\"hot\",collection=\"api_logs\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("dcb_up 1\n"), "{text}");
    }

    // Drills and re-verification passes show under their names.
    #[test]
    fn drills_and_reverification() {
        let m = Metrics::default();
        m.record_drill("hot", true, 1.7e9);
        m.record_drill("hot", false, 1.8e9);
        m.record_reverify(3, 1, 4096, 1, 1.7e9);
        let text = m.render(&[], true);
        assert!(text.contains("dcb_drill_ok{policy=\"hot\"} 0"), "{text}");
        assert!(
            text.contains("dcb_drill_last_success_timestamp_seconds{policy=\"hot\"} 1700000000"),
            "{text}"
        );
        assert!(
            text.contains("dcb_reverify_archives_total{result=\"corrupt\"} 1"),
            "{text}"
        );
        assert!(text.contains("dcb_reverify_bytes_total 4096"), "{text}");
        assert!(text.contains("dcb_reverify_corrupt_archives 1"), "{text}");
        scrape(&text);
    }

    // A last success from the state shows before any run, and never hides a newer one.
    #[test]
    fn seeded_last_success() {
        let m = Metrics::default();
        m.seed_last_success("hot", "api_logs", 1.6e9);
        let shown = |m: &Metrics| {
            scrape(&m.render(&[], true))
                .samples
                .into_iter()
                .find(|s| s.metric == "dcb_last_success_timestamp_seconds")
                .map(|s| match s.value {
                    prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                    other => panic!("{other:?}"),
                })
        };
        assert_eq!(shown(&m), Some(1.6e9));
        m.record_run("hot", "api_logs", RunResult::Failure, 0.1, 1.7e9);
        m.seed_last_success("hot", "api_logs", 1.5e9);
        assert_eq!(shown(&m), Some(1.6e9));
    }
}
