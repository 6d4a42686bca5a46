//! Collections named by pattern and collections nothing covers, against a real test
//! server: `dcb run` backs up what a pattern matches when the run starts (not what an
//! exclusion names), and `dcb validate --online` reports what no policy covers.

mod support;

use mongodb::bson::{DateTime, Document, doc};
use support::{Run, Scratch};

async fn create(db: &str, names: &[&str]) {
    let client = support::client().await;
    for name in names {
        client
            .database(db)
            .collection::<Document>(name)
            .insert_one(doc! {"createdAt": DateTime::now(), "name": *name})
            .await
            .unwrap();
    }
}

fn policy(db: &str, collections: &str) -> String {
    format!(
        "name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow: {{initial: all, settle: 0s}}\n\
         collections: {collections}\nretention: 1d\n"
    )
}

fn collections_archived(s: &Scratch) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(s.path().join("backups/p"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let stem = n.strip_suffix(".tar.gz")?;
                    Some(stem.rsplit_once('.')?.1.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

// A pattern takes the collections it matches when each run starts, with its own
// settings; a name given outright keeps its own; an exclusion in dcb.yaml keeps a
// match out; a collection created later is taken by the next run.
#[tokio::test]
async fn patterns_take_what_they_match_when_each_run_starts() {
    let db = support::unique_db("pattern");
    create(
        &db,
        &["api_logs", "error_logs", "debug_logs", "roles", "orders"],
    )
    .await;
    let s = Scratch::new();
    s.write("dcb.yaml", "exclude: [\"debug_*\"]\n");
    s.write(
        "policies/p.yaml",
        &policy(&db, "\n  - roles\n  - {name: \"*_logs\", mode: snapshot}\n"),
    );
    let uri = support::uri_with_db(&db);
    let run = Run::from(
        s.dcb()
            .args(["run", "--all"])
            .env("DCB_MONGODB_URI", &uri)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        collections_archived(&s),
        ["api_logs", "error_logs", "roles"]
    );
    // The pattern's settings: a snapshot of each match.
    let manifests: Vec<serde_json::Value> = std::fs::read_dir(s.path().join("backups/p"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    for m in &manifests {
        let want = if m["collection"] == "roles" {
            "incremental"
        } else {
            "snapshot"
        };
        assert_eq!(m["mode"], want, "{m}");
    }

    create(&db, &["line3_logs"]).await;
    let run = Run::from(
        s.dcb()
            .args(["run", "--all"])
            .env("DCB_MONGODB_URI", &uri)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        collections_archived(&s),
        ["api_logs", "error_logs", "line3_logs", "roles"]
    );

    // `dcb plan` shows the pattern; `dcb status` the collections it matched.
    let plan = s.run(&["plan"]);
    assert!(plan.stdout.contains("*_logs"), "{}", plan.stdout);
    let status = s.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let names: Vec<&str> = v["policies"][0]["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["collection"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["roles", "api_logs", "error_logs", "line3_logs"],
        "{v}"
    );
}

// `validate --online` warns about every collection of a backed-up database that no
// enabled policy covers and no exclusion names, about a pattern that matches nothing,
// and about a collection a pattern takes that another policy backs up too.
#[tokio::test]
async fn validate_online_reports_what_nothing_covers() {
    let db = support::unique_db("uncov");
    create(&db, &["api_logs", "roles", "orders", "tmp_1", "audit"]).await;
    let s = Scratch::new();
    s.write("dcb.yaml", "exclude: [\"tmp_*\", \"*.audit\"]\n");
    s.write("policies/p.yaml", &policy(&db, "[api_logs, \"*_archive\"]"));
    s.write(
        "policies/q.yaml",
        &policy(&db, "[roles]")
            .replace("name: p", "name: q")
            .replace("enabled: true", ""),
    );
    let uri = support::uri_with_db(&db);
    let validate = || {
        Run::from(
            s.dcb()
                .args(["validate", "--online"])
                .env("DCB_MONGODB_URI", &uri)
                .output()
                .unwrap(),
        )
    };
    let run = validate();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains(&format!(
            "warning[uncovered-collection]: collection `{db}.orders` is backed up by no policy"
        )),
        "{out}"
    );
    assert!(out.contains("--> dcb.yaml:1:1"), "{out}");
    for covered in ["api_logs", "roles", "tmp_1", "audit"] {
        assert!(
            !out.contains(&format!("`{db}.{covered}`")),
            "{covered}: {out}"
        );
    }
    assert!(
        out.contains(&format!(
            "pattern `*_archive` matches no collection of `{db}`"
        )),
        "{out}"
    );

    // A disabled policy does not cover its collections, and says so.
    s.write(
        "policies/q.yaml",
        &format!(
            "{}enabled: false\n",
            policy(&db, "[roles]").replace("name: p", "name: q")
        ),
    );
    let out = validate().stdout;
    assert!(
        out.contains(&format!(
            "collection `{db}.roles` is backed up by no policy: policy `q` names it but is disabled"
        )),
        "{out}"
    );

    // A catch-all pattern covers the rest; overlapping another policy is a warning.
    s.write(
        "policies/q.yaml",
        &policy(&db, "[roles]").replace("name: p", "name: q"),
    );
    s.write("policies/p.yaml", &policy(&db, "[api_logs, \"*\"]"));
    let run = validate();
    assert!(
        !run.stdout.contains("uncovered-collection"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "collection `{db}.roles` is backed up by policies `p` and `q` (a pattern matches it)"
        )),
        "{}",
        run.stdout
    );
    // An invalid exclusion is an error at its place in dcb.yaml.
    s.write("dcb.yaml", "exclude: [\"[abc\"]\n");
    let run = validate();
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("--> dcb.yaml:1:11"), "{all}");
    assert!(all.contains("pattern `[abc`"), "{all}");
}
