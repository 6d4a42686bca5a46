//! `dcb plan`: next fire times in each policy's zone and the window a run would read.

mod support;

use support::{Run, Scratch};

// The JSON plan lists the seed's hourly schedule in Shanghai time, a today-window
// from local midnight, and every collection with its own time field and mode.
#[test]
fn plan_shows_schedule_and_windows() {
    let s = Scratch::new();
    s.write(
        "policies/demo.yaml",
        "name: demo\nschedule: \"0 */1 * * *\"\ntimezone: Asia/Shanghai\ndatabase: dcMes\ncollections:\n  - api_logs\n  - name: roles\n    timeField: updatedAt\n    mode: snapshot\nretention: 72h\n",
    );
    let run = s.run(&["plan", "--json", "--runs", "2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let p = &v[0];
    assert_eq!(p["policy"], "demo");
    assert_eq!(p["database"], "dcMes");
    assert_eq!(p["timezone"], "Asia/Shanghai");
    let runs = p["nextRuns"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        let r = r.as_str().unwrap();
        assert!(r.ends_with(":00:00+08:00"), "{r}");
    }
    let api = &p["collections"][0];
    assert_eq!(api["timeField"], "createdAt");
    assert_eq!(api["mode"], "incremental");
    assert!(api["from"].as_str().unwrap().ends_with("T00:00:00+08:00"));
    assert_eq!(api["fromSource"], "initial: today");
    let roles = &p["collections"][1];
    assert_eq!(roles["mode"], "snapshot");
    assert_eq!(roles["from"], serde_json::Value::Null);

    let run = s.run(&["plan"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("schedule     0 */1 * * *  in Asia/Shanghai"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("roles"), "{}", run.stdout);
}

// Without any config file, a database in the URI is enough; with none anywhere the
// plan is a configuration error that says where to set it.
#[test]
fn database_resolution() {
    let s = Scratch::new();
    s.write(
        "policies/demo.yaml",
        "name: demo\nschedule: \"0 2 * * *\"\ncollections: [roles]\nretention: 30d\n",
    );
    let run = s.run(&["plan"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("policy `demo` names no database"),
        "{}",
        run.stderr
    );
    let run = Run::from(
        s.dcb()
            .args(["plan", "--json"])
            .env("DCB_MONGODB_URI", "mongodb://127.0.0.1:27017/fromuri")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("\"database\": \"fromuri\""));
    let run = s.run(&["plan", "--policy", "nope"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no policy named `nope`"),
        "{}",
        run.stderr
    );
}

// `--runs` is bounded to 1..=1000: anything else is a usage error (exit 2), not a
// panic or a huge allocation.
#[test]
fn runs_is_bounded() {
    let s = Scratch::new();
    s.write(
        "policies/demo.yaml",
        "name: demo\nschedule: \"* * * * * *\"\ndatabase: dcMes\ncollections: [a]\nretention: 1d\n",
    );
    for runs in ["0", "1001", "18446744073709551615"] {
        let run = s.run(&["plan", "--runs", runs]);
        assert_eq!(run.code, 2, "--runs {runs}: {}", run.stderr);
        assert!(run.stderr.contains("--runs"), "{}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    let run = s.run(&["plan", "--json", "--runs", "1000"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v[0]["nextRuns"].as_array().unwrap().len(), 1000);
}
