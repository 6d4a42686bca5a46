//! `dcb validate`: every class of bad input is a located diagnostic with a stable
//! code and exit 1; good input passes with exit 0.

mod support;

use support::{Run, Scratch, VALID_POLICY};

/// Windows writes `policies\demo.yaml`: a `\` before a file name shows as `/`, so one
/// snapshot serves every platform.
const PATH_FILTERS: &[(&str, &str)] = &[(r"\\([\w.-]+\.ya?ml)\b", "/$1")];

/// `insta::assert_snapshot!` with [`PATH_FILTERS`].
macro_rules! snapshot {
    ($($arg:tt)*) => {
        insta::with_settings!({ filters => PATH_FILTERS.to_vec() }, {
            insta::assert_snapshot!($($arg)*);
        })
    };
}

/// A deployment's connection URI: policies without a `database` (VALID_POLICY) back up
/// its database.
const URI: &str = "mongodb://127.0.0.1:27017/dcMes";

/// `dcb ARGS` in `s`, with a database in the connection URI.
fn dcb(s: &Scratch, args: &[&str]) -> Run {
    Run::from(
        s.dcb()
            .args(args)
            .env("DCB_MONGODB_URI", URI)
            .output()
            .unwrap(),
    )
}

/// Validate one policy file written as `policies/<name>.yaml`; return the transcript.
fn validate_one(name: &str, text: &str) -> (i32, String) {
    let s = Scratch::new();
    s.write(&format!("policies/{name}.yaml"), text);
    let run = dcb(&s, &["validate"]);
    (run.code, run.stdout)
}

fn transcript(code: i32, out: &str) -> String {
    format!("exit {code}\n{out}")
}

// The shipped policies are valid and have no warnings.
#[test]
fn shipped_policies_are_valid() {
    let s = Scratch::new();
    let root = support::project_root();
    let run = dcb(
        &s,
        &[
            "validate",
            "--deny-warnings",
            root.join("policies").to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("4 policies valid, 0 warnings"),
        "{}",
        run.stdout
    );
    // On a fresh checkout, with no configuration at all, they are valid too; only the
    // database is left for the deployment to name.
    let bare = s.run(&["validate", root.join("policies").to_str().unwrap()]);
    assert_eq!(bare.code, 0, "{}{}", bare.stdout, bare.stderr);
    assert_eq!(
        bare.stdout.matches("warning[missing-database]").count(),
        4,
        "{}",
        bare.stdout
    );
}

// The example config is valid and points at the shipped policies.
#[test]
fn example_config_is_valid() {
    let s = Scratch::new();
    let cfg = support::project_root().join("examples/dcb.yaml");
    let run = dcb(
        &s,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "validate",
            "--deny-warnings",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("4 policies valid"), "{}", run.stdout);
}

// Every example policy is valid.
#[test]
fn example_policies_are_valid() {
    let s = Scratch::new();
    let dir = support::project_root().join("examples/policies");
    let run = dcb(&s, &["validate", "--deny-warnings", dir.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("1 policy valid, 0 warnings"),
        "{}",
        run.stdout
    );
}

// Each shipped policy points editors at the schema on its first line.
#[test]
fn shipped_policies_reference_the_schema() {
    for entry in std::fs::read_dir(support::project_root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().next(),
            Some("# yaml-language-server: $schema=../schema/policy.schema.json"),
            "{}",
            path.display()
        );
    }
}

// A valid policy passes; the summary counts it.
#[test]
fn valid_policy_passes() {
    let (code, out) = validate_one("demo", VALID_POLICY);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "1 policy valid, 0 warnings\n");
}

// Malformed YAML is a yaml-syntax error at the line and column of the fault.
#[test]
fn malformed_yaml() {
    let (code, out) = validate_one(
        "demo",
        "name: demo\nschedule: \"0 * * * *\ncollections: [a\n",
    );
    snapshot!(transcript(code, &out));
}

// Values of the wrong type name the expected type and what was found.
#[test]
fn wrong_types() {
    let text = VALID_POLICY
        .replace(
            "retention: 72h",
            "retention: 72h\nconcurrency: three\nkeepLast: -1\nenabled: \"yes\"",
        )
        .replace(
            "timezone: Asia/Shanghai\n",
            "timezone: Asia/Shanghai\ncompression: 6\n",
        );
    let (code, out) = validate_one("demo", &text);
    snapshot!(transcript(code, &out));
}

// Unknown keys are errors at the key, with a "did you mean" hint, at any depth.
#[test]
fn unknown_keys() {
    let text = VALID_POLICY
        .replace("retention: 72h", "retension: 72h\nwindow:\n  setle: 1m")
        .replace("timeField: updatedAt", "timefield: updatedAt");
    let (code, out) = validate_one("demo", &text);
    snapshot!(transcript(code, &out));
}

// A cron expression with the wrong number of fields, an out-of-range value, or no
// possible date is an invalid-cron error.
#[test]
fn bad_cron() {
    for (i, cron) in ["0 */1 * *", "61 * * * *", "0 0 30 2 *"].iter().enumerate() {
        let text = VALID_POLICY.replace("0 */1 * * *", cron);
        let (code, out) = validate_one("demo", &text);
        snapshot!(format!("bad_cron_{i}"), transcript(code, &out));
    }
}

// An unknown time zone suggests the closest real one.
#[test]
fn unknown_timezone() {
    let text = VALID_POLICY.replace("Asia/Shanghai", "Asia/Shanghia");
    let (code, out) = validate_one("demo", &text);
    snapshot!(transcript(code, &out));
}

// Durations that do not parse, and a zero retention, are invalid-duration errors.
#[test]
fn bad_durations() {
    let text = VALID_POLICY.replace(
        "retention: 72h",
        "retention: 3 days\nwindow:\n  initial: yesterday\n  settle: 1y\n  overlap: 99999999999999999999d",
    );
    let (code, out) = validate_one("demo", &text);
    snapshot!("bad_durations", transcript(code, &out));
    let (code, out) = validate_one("demo", &VALID_POLICY.replace("72h", "0s"));
    snapshot!("zero_retention", transcript(code, &out));
}

// Policy names that would escape the backup folder, or differ from the file name,
// are refused.
#[test]
fn bad_policy_names() {
    for (i, name) in ["../etc", "a/b", "Hot", "nul\\0x"].iter().enumerate() {
        let text = VALID_POLICY.replace("name: demo", &format!("name: \"{name}\""));
        let (code, out) = validate_one("demo", &text);
        snapshot!(format!("bad_policy_name_{i}"), transcript(code, &out));
    }
}

// Names Windows reserves for devices fit the name pattern but cannot be folders.
#[test]
fn reserved_policy_names() {
    let mut all = String::new();
    for name in ["con", "lpt9", "aux"] {
        let text = VALID_POLICY.replace("name: demo", &format!("name: {name}"));
        let (code, out) = validate_one("demo", &text);
        all.push_str(&transcript(code, &out));
    }
    snapshot!(all);
}

// A valid name that is not the file's name is a name-mismatch error at the name.
#[test]
fn name_differs_from_file_name() {
    let (code, out) = validate_one("demo", &VALID_POLICY.replace("name: demo", "name: other"));
    snapshot!(transcript(code, &out));
}

// Collection and database names with path separators, `..` or NUL are refused before
// any use.
#[test]
fn bad_collection_names() {
    let text = VALID_POLICY
        .replace(
            "  - api_logs\n",
            "  - api_logs\n  - \"../../etc/passwd\"\n  - \"a\\\\b\"\n  - \"x\\0y\"\n  - name: \"c:d\"\n  - \"a..b\"\n  - api_logs\n  - Api_Logs\n",
        )
        .replace("retention: 72h", "retention: 72h\ndatabase: \"../x\"");
    let (code, out) = validate_one("demo", &text);
    snapshot!(transcript(code, &out));
}

// Missing required fields and repeated keys are reported, all in one pass.
#[test]
fn missing_fields_and_duplicate_keys() {
    let text = "name: demo\nname: demo\ncollections: []\n";
    let (code, out) = validate_one("demo", text);
    snapshot!(transcript(code, &out));
}

// An empty file or a YAML list is not a policy.
#[test]
fn not_a_mapping() {
    let (code, out) = validate_one("demo", "");
    snapshot!("empty_file", transcript(code, &out));
    let (code, out) = validate_one("demo", "- a\n- b\n");
    snapshot!("list_file", transcript(code, &out));
}

// Two files with one name are an error; one collection in two policies and a
// retention shorter than two intervals are warnings, which --deny-warnings fails on.
#[test]
fn cross_file_checks_and_warnings() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", VALID_POLICY);
    s.write(
        "policies/other.yaml",
        &VALID_POLICY
            .replace("name: demo", "name: other")
            .replace("0 */1 * * *", "0 2 * * *")
            .replace("72h", "36h"),
    );
    let run = dcb(&s, &["validate"]);
    assert_eq!(run.code, 0, "warnings alone pass: {}", run.stdout);
    snapshot!("warnings", run.stdout);
    let run = dcb(&s, &["validate", "--deny-warnings"]);
    assert_eq!(run.code, 1);

    s.write(
        "policies/copy.yml",
        &VALID_POLICY.replace("name: demo", "name: copy"),
    );
    s.write("elsewhere/demo.yaml", VALID_POLICY);
    let run = dcb(&s, &["validate", "policies", "elsewhere/demo.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains(
            "error[duplicate-policy]: policy `demo` is also defined in policies/demo.yaml"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("--> elsewhere/demo.yaml:1:7"),
        "{}",
        run.stdout
    );
}

// JSON output is machine-readable and carries file, line, column, code and hint.
#[test]
fn json_format() {
    let s = Scratch::new();
    s.write(
        "policies/demo.yaml",
        &VALID_POLICY.replace("Asia/Shanghai", "Mars/Olympus"),
    );
    let run = dcb(&s, &["validate", "--format", "json"]);
    assert_eq!(run.code, 1);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["errors"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "invalid-timezone");
    assert_eq!(
        d["file"],
        std::path::Path::new("policies")
            .join("demo.yaml")
            .to_str()
            .unwrap()
    );
    assert_eq!(d["line"], 3);
    assert_eq!(d["column"], 11);
    assert_eq!(d["severity"], "error");
    assert!(d["hint"].as_str().unwrap().contains("IANA"));
}

// GitHub format emits workflow annotations CI turns into inline comments.
#[test]
fn github_format() {
    let s = Scratch::new();
    s.write(
        "policies/demo.yaml",
        &VALID_POLICY.replace("retention: 72h", "retention: 72h\nretension: 1d"),
    );
    let run = dcb(&s, &["validate", "--format", "github"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        "::error file=policies/demo.yaml,line=9,col=1,title=dcb unknown-field::unknown field `retension`%0Ahint: did you mean `retention`?\n"
    );
}

// Usage errors exit 2; a path that does not exist is a diagnostic and exit 1.
#[test]
fn exit_codes() {
    let s = Scratch::new();
    assert_eq!(dcb(&s, &["validate", "--format", "xml"]).code, 2);
    assert_eq!(dcb(&s, &["frobnicate"]).code, 2);
    let run = dcb(&s, &["validate", "nope.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("error[io-error]: cannot read file"),
        "{}",
        run.stdout
    );
    let run = dcb(&s, &["validate", "policies"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("error[no-policies]"), "{}", run.stdout);
}

// A bad dcb.yaml is reported with its own locations; an unset variable names itself.
#[test]
fn config_errors_are_located() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", VALID_POLICY);
    s.write(
        "dcb.yaml",
        "mongodb:\n  uri: mongodb://backup:${DCB_TEST_UNSET_PASSWORD}@db/dcMes\nbackupRot: /srv\ntimezone: Asia/Shangai\n",
    );
    let run = dcb(&s, &["validate"]);
    assert_eq!(run.code, 1);
    snapshot!(run.stdout);
    // Other commands refuse to run on a broken config: exit 2.
    let run = dcb(&s, &["plan"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("dcb.yaml:2:8"), "{}", run.stderr);
}

// Interpolation fills values from the environment, so no password sits in a file.
#[test]
fn config_interpolation_and_precedence() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", VALID_POLICY);
    s.write(
        "cfg/dcb.yaml",
        "database: ${DCB_TEST_DB:-fallbackdb}\npoliciesDir: ../policies\n",
    );
    let run = dcb(&s, &["--config", "cfg/dcb.yaml", "plan", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v[0]["database"], "fallbackdb");

    let run = Run::from(
        s.dcb()
            .args(["plan", "--json"])
            .env("DCB_CONFIG", "cfg/dcb.yaml")
            .env("DCB_TEST_DB", "fromenv")
            .output()
            .unwrap(),
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v[0]["database"], "fromenv");

    // A flag wins over the environment: this folder has no policies.
    std::fs::create_dir(s.path().join("empty")).unwrap();
    let run = Run::from(
        s.dcb()
            .args(["--policies", "empty", "plan"])
            .env("DCB_CONFIG", "cfg/dcb.yaml")
            .env("DCB_POLICIES_DIR", "policies")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no-policies"), "{}", run.stderr);
}

// Notifier fields serde cannot judge (URLs, addresses) are checked by `validate` too,
// located at the field and without echoing the value's secrets.
#[test]
fn bad_notifier_fields_are_located() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", VALID_POLICY);
    s.write(
        "dcb.yaml",
        "alerts:\n  notifiers:\n    - type: email\n      host: smtp.example.com\n      from: not-an-address\n      to: [ops@example.com]\n",
    );
    let run = dcb(&s, &["validate"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("dcb.yaml:5:13"), "{}", run.stdout);
    assert!(
        run.stdout.contains("is not an email address"),
        "{}",
        run.stdout
    );
    let run = dcb(&s, &["plan"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

/// Wait for a child at most `secs`; a test that would hang fails instead.
#[cfg(unix)]
fn wait_bounded(mut child: std::process::Child, secs: u64) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("dcb did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

// Files with no length (a device, a FIFO fed forever) are read up to the size limit
// and refused, not read without end.
#[cfg(unix)]
#[test]
fn endless_inputs_are_bounded() {
    use std::process::Stdio;
    let s = Scratch::new();
    let fifo = s.path().join("endless.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo only creates a file at a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let feeder = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let chunk = [b'#'; 8192];
            // Ends when dcb closes its end (EPIPE).
            while f.write_all(&chunk).is_ok() {}
        }
    });
    for path in ["/dev/zero", fifo.to_str().unwrap()] {
        let child = s
            .dcb()
            .args(["validate", path])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let run = Run::from(wait_bounded(child, 30));
        assert_eq!(run.code, 1, "{path}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stdout
                .contains("error[io-error]: file is larger than allowed"),
            "{path}: {}",
            run.stdout
        );
    }
    feeder.join().unwrap();
}

// A reader that goes away early does not change the verdict: still exit 1 for an
// invalid policy, and no panic.
#[test]
fn closed_stdout_keeps_the_exit_code() {
    let s = Scratch::new();
    s.write(
        "policies/demo.yaml",
        &VALID_POLICY.replace("Asia/Shanghai", "Mars/Olympus"),
    );
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let run = Run::from(s.dcb().arg("validate").stdout(writer).output().unwrap());
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

// A config file named but not there is a usage error (exit 2), as for the other
// commands, from the flag or from DCB_CONFIG; one that exists but is invalid is a
// failed validation (exit 1, located diagnostics).
#[test]
fn missing_named_config_is_a_usage_error() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", VALID_POLICY);
    let run = dcb(&s, &["--config", "missing.yaml", "validate"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("missing.yaml:1:1") && run.stderr.contains("config file not found"),
        "{}",
        run.stderr
    );
    let run = Run::from(
        s.dcb()
            .arg("validate")
            .env("DCB_CONFIG", "missing.yaml")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(dcb(&s, &["--config", "missing.yaml", "plan"]).code, 2);

    s.write("present.yaml", "timezone: Mars/Olympus\n");
    let run = dcb(&s, &["--config", "present.yaml", "validate"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("present.yaml:1:11"), "{}", run.stdout);
}

// Numbers the schema's type admits but the field cannot hold (a fraction, more than
// the field's range) are errors at their own node, in policies and in dcb.yaml.
#[test]
fn numbers_that_do_not_fit() {
    for (i, value) in ["1.0", "4294967296"].iter().enumerate() {
        let text = VALID_POLICY.replace(
            "retention: 72h",
            &format!("retention: 72h\nkeepLast: {value}"),
        );
        let (code, out) = validate_one("demo", &text);
        snapshot!(format!("keep_last_{i}"), transcript(code, &out));
    }
    let s = Scratch::new();
    s.write("policies/demo.yaml", VALID_POLICY);
    for (i, health) in [
        "failureThreshold: 1.0",
        "failureThreshold: 4294967296",
        "minFreeMB: 18446744073709551616",
    ]
    .iter()
    .enumerate()
    {
        s.write(
            "dcb.yaml",
            &format!("database: dcMes\nhealth:\n  interval: 5m\n  {health}\n"),
        );
        let run = dcb(&s, &["validate"]);
        snapshot!(
            format!("config_number_{i}"),
            transcript(run.code, &run.stdout)
        );
    }
}

// Snapshots read the same on Windows: the `\` before a file name shows as `/`.
#[test]
fn snapshots_show_forward_slashes() {
    snapshot!(
        "  --> policies\\demo.yaml:3:11\nalso defined in elsewhere\\demo.yml\nnot a path: \"a\\\\b\"",
        @r#"
    --> policies/demo.yaml:3:11
  also defined in elsewhere/demo.yml
  not a path: "a\\b"
  "#
    );
}

// Without a database in the policy, dcb.yaml or the URI, validate warns at the
// policy's name (fails with --deny-warnings; plan and run refuse it); any one of the
// three is enough. A database the URI
// names is checked like any other.
#[test]
fn missing_database() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", VALID_POLICY);
    let run = s.run(&["validate"]);
    snapshot!(transcript(run.code, &run.stdout));
    assert_eq!(run.code, 0, "a warning: policies are often validated alone");
    assert_eq!(s.run(&["validate", "--deny-warnings"]).code, 1);
    assert_eq!(s.run(&["plan"]).code, 2);

    assert_eq!(dcb(&s, &["validate"]).code, 0);
    s.write("dcb.yaml", "database: dcMes\n");
    assert_eq!(s.run(&["validate", "--deny-warnings"]).code, 0);
    std::fs::remove_file(s.path().join("dcb.yaml")).unwrap();
    s.write(
        "policies/demo.yaml",
        &VALID_POLICY.replace("retention: 72h", "retention: 72h\ndatabase: dcMes"),
    );
    assert_eq!(s.run(&["validate", "--deny-warnings"]).code, 0);

    s.write("policies/demo.yaml", VALID_POLICY);
    let run = Run::from(
        s.dcb()
            .arg("validate")
            .env("DCB_MONGODB_URI", "mongodb://127.0.0.1:27017/..%2Fx")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("error[invalid-database-name]: policy `demo` inherits an invalid database"),
        "{}",
        run.stdout
    );
}

// A collection in two policies warns when both back up the same database, whether a
// policy names it or inherits it from dcb.yaml or the URI; other databases are not
// compared.
#[test]
fn collection_in_two_policies_compares_resolved_databases() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", VALID_POLICY);
    let other = |db: &str| {
        VALID_POLICY
            .replace("name: demo", "name: other")
            .replace("retention: 72h", &format!("retention: 72h\ndatabase: {db}"))
    };
    s.write("policies/other.yaml", &other("dcMes"));
    let run = dcb(&s, &["validate"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "warning[collection-in-several-policies]: collection `api_logs` is also backed up by policy `demo`"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 warnings"), "{}", run.stdout);
    s.write("policies/other.yaml", &other("archive"));
    let run = dcb(&s, &["validate"]);
    assert_eq!(run.stdout, "2 policies valid, 0 warnings\n");
}

// Names that make a file name longer than file systems allow (255 bytes) are refused
// at the collection. With `dcMes`, 183 bytes of collection fit (an encrypted archive's
// spool file is the longest name); with a 60-byte policy name, the manifest member
// `dcb-manifest.<policy>.<db>.<collection>.json` limits it to 170.
#[test]
fn names_too_long_for_a_file() {
    let policy = |name: &str, collection: usize| {
        VALID_POLICY
            .replace("name: demo", &format!("name: {name}"))
            .replace(
                "  - api_logs\n",
                &format!("  - {}\n", "c".repeat(collection)),
            )
    };
    let (code, out) = validate_one("demo", &policy("demo", 183));
    assert_eq!(code, 0, "{out}");
    let (code, out) = validate_one("demo", &policy("demo", 184));
    snapshot!(transcript(code, &out));
    let long = "p".repeat(60);
    let (code, out) = validate_one(&long, &policy(&long, 170));
    assert_eq!(code, 0, "{out}");
    let (code, out) = validate_one(&long, &policy(&long, 171));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("makes file names of 256 bytes; file systems allow 255"),
        "{out}"
    );
}

// Each setting takes the flag over the environment over dcb.yaml, shown with three
// distinct values: the policies folder, the backup root, and DCB_MONGODB_URI over
// mongodb.uri.
#[test]
fn flags_beat_environment_beat_config() {
    let s = Scratch::new();
    for level in ["flag", "env", "file"] {
        s.write(
            &format!("p_{level}/{level}.yaml"),
            &VALID_POLICY.replace("name: demo", &format!("name: {level}")),
        );
    }
    s.write(
        "dcb.yaml",
        "mongodb:\n  uri: mongodb://127.0.0.1:27017/db_file\npoliciesDir: p_file\nbackupRoot: b_file\n",
    );
    let run = |args: &[&str], env: &[(&str, &str)]| {
        Run::from(
            s.dcb()
                .args(args)
                .envs(env.iter().copied())
                .output()
                .unwrap(),
        )
    };
    let plan = |args: &[&str], env: &[(&str, &str)]| {
        let r = run(&[args, &["plan", "--json"]].concat(), env);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        (
            v[0]["policy"].as_str().unwrap().to_string(),
            v[0]["database"].as_str().unwrap().to_string(),
        )
    };
    let root = |args: &[&str], env: &[(&str, &str)]| {
        let r = run(&[args, &["verify"]].concat(), env);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    let env = [
        ("DCB_POLICIES_DIR", "p_env"),
        ("DCB_BACKUP_ROOT", "b_env"),
        ("DCB_MONGODB_URI", "mongodb://127.0.0.1:27017/db_env"),
    ];
    let flags = ["--policies", "p_flag", "--backup-root", "b_flag"];

    assert_eq!(plan(&flags, &env), ("flag".into(), "db_env".into()));
    assert_eq!(plan(&[], &env), ("env".into(), "db_env".into()));
    assert_eq!(plan(&[], &[]), ("file".into(), "db_file".into()));

    assert_eq!(root(&flags, &env), "no archives to verify under b_flag\n");
    assert_eq!(root(&[], &env), "no archives to verify under b_env\n");
    assert_eq!(root(&[], &[]), "no archives to verify under b_file\n");
}

// A file that is not UTF-8 is reported at its first bad byte, not at 1:1.
#[test]
fn not_utf8_is_located() {
    let s = Scratch::new();
    std::fs::write(
        s.path().join("policies/demo.yaml"),
        b"name: demo\r\nschedule: \"0 * * * *\"\ndescription: caf\xe9 au lait\n",
    )
    .unwrap();
    let run = dcb(&s, &["validate"]);
    snapshot!(transcript(run.code, &run.stdout));
}
