//! `dcb config`: the effective configuration with each value's origin, run as a real
//! process. Every secret, however it is given (in the URI in dcb.yaml, in
//! `DCB_MONGODB_URI`, through `${VAR}`, in a password file, in a notifier), is `***` in
//! both outputs and appears nowhere in stdout or stderr.

mod support;

use serde_json::Value;
use support::{Run, Scratch};

/// A policy that names its database, so no configuration is needed to resolve it.
const POLICY: &str = "\
name: demo
schedule: \"0 */1 * * *\"
database: dcMes
collections:
  - api_logs
retention: 72h
";

/// `dcb ARGS config` and `dcb ARGS config --json` with `env`: (human, JSON run, JSON).
fn config(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> (Run, Run, Value) {
    let run = |json: bool| {
        let mut cmd = s.dcb();
        cmd.args(args).arg("config");
        if json {
            cmd.arg("--json");
        }
        cmd.envs(env.iter().copied());
        Run::from(cmd.output().expect("run dcb"))
    };
    let human = run(false);
    let json = run(true);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let value: Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", json.stdout));
    (human, json, value)
}

/// (value, origin) of a configuration key in the JSON output.
fn key<'a>(v: &'a Value, key: &str) -> (&'a Value, &'a str) {
    let e = &v["config"][key];
    assert!(e.is_object(), "no `{key}` in {v:#}");
    (&e["value"], e["origin"].as_str().unwrap())
}

/// The human line of `key`: its value and origin, split on the column gaps.
fn line<'a>(run: &'a Run, key: &str) -> Vec<&'a str> {
    let l = run
        .stdout
        .lines()
        .find(|l| l.trim_start().split("  ").next() == Some(key))
        .unwrap_or_else(|| panic!("no line for `{key}` in:\n{}", run.stdout));
    l.split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// No secret in any output, stdout or stderr.
fn assert_hidden(runs: &[&Run], secrets: &[&str]) {
    for run in runs {
        for secret in secrets {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "`{secret}` shown:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
    }
}

// A password written into the URI in dcb.yaml is `***`, at the file's line.
#[test]
fn uri_password_in_dcb_yaml() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    s.write(
        "dcb.yaml",
        "# the deployment\nmongodb:\n  uri: mongodb://backup:Pl41nYamlPw@db.local:27017/dcMes?authSource=admin\n",
    );
    let (human, json, v) = config(&s, &[], &[]);
    assert_hidden(&[&human, &json], &["Pl41nYamlPw"]);
    let masked = "mongodb://backup:***@db.local:27017/dcMes?authSource=admin";
    assert_eq!(key(&v, "mongodb.uri"), (&Value::from(masked), "dcb.yaml:3"));
    assert_eq!(
        line(&human, "mongodb.uri"),
        ["mongodb.uri", masked, "dcb.yaml:3"]
    );
    assert_eq!(key(&v, "config"), (&Value::from("dcb.yaml"), "default"));
}

// DCB_MONGODB_URI beats dcb.yaml; its password is `***` and its origin the variable.
#[test]
fn uri_password_in_environment() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    s.write(
        "dcb.yaml",
        "mongodb:\n  uri: mongodb://backup:F1lePassw0rd@file.local/dcMes\n",
    );
    let (human, json, v) = config(
        &s,
        &[],
        &[(
            "DCB_MONGODB_URI",
            "mongodb://backup:Env%2FPassw0rd@env.local:27017/mes?authSource=admin",
        )],
    );
    // Percent-encoded and decoded, and the file's unused one too.
    assert_hidden(
        &[&human, &json],
        &["Env%2FPassw0rd", "Env/Passw0rd", "F1lePassw0rd"],
    );
    let masked = "mongodb://backup:***@env.local:27017/mes?authSource=admin";
    assert_eq!(
        key(&v, "mongodb.uri"),
        (&Value::from(masked), "env DCB_MONGODB_URI")
    );
    assert_eq!(
        line(&human, "mongodb.uri"),
        ["mongodb.uri", masked, "env DCB_MONGODB_URI"]
    );
}

// A password read from the environment by `${VAR}` in dcb.yaml is `***`; the origin
// is the file's line and names the variable, never a `${VAR:-default}`'s default.
#[test]
fn uri_password_interpolated() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    s.write(
        "dcb.yaml",
        "mongodb:\n  uri: mongodb://backup:${DB_PASSWORD_T}@db.local/dcMes\n\
         alerts:\n  notifiers:\n    - type: email\n      host: smtp.local\n      username: dcb\n\
         \x20     password: ${SMTP_PASSWORD_T:-Dfl7SmtpPw}\n      from: dcb@f.local\n      to: [ops@f.local]\n",
    );
    let (human, json, v) = config(&s, &[], &[("DB_PASSWORD_T", "Int3rpolatedPw")]);
    assert_hidden(&[&human, &json], &["Int3rpolatedPw", "Dfl7SmtpPw"]);
    let masked = "mongodb://backup:***@db.local/dcMes";
    let origin = "dcb.yaml:2 with env DB_PASSWORD_T";
    assert_eq!(key(&v, "mongodb.uri"), (&Value::from(masked), origin));
    assert_eq!(line(&human, "mongodb.uri"), ["mongodb.uri", masked, origin]);
    let origin = "dcb.yaml:8 with the default of ${SMTP_PASSWORD_T}";
    assert_eq!(
        key(&v, "alerts.notifiers.0.password"),
        (&Value::from("***"), origin)
    );
    assert_eq!(
        line(&human, "alerts.notifiers.0.password"),
        ["alerts.notifiers.0.password", "***", origin]
    );
}

// A password file is shown by its path (from dcb.yaml, or DCB_MONGODB_PASSWORD_FILE
// which beats it); its contents never appear.
#[test]
fn password_file_shows_its_path_only() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    s.write("secrets/file.pw", "Fr0mTheFilePw\n");
    s.write("secrets/env.pw", "Fr0mTheEnvFilePw\n");
    s.write(
        "dcb.yaml",
        "mongodb:\n  uri: mongodb://backup@db.local/dcMes\n  passwordFile: secrets/file.pw\n",
    );
    let secrets = ["Fr0mTheFilePw", "Fr0mTheEnvFilePw"];
    let (human, json, v) = config(&s, &[], &[]);
    assert_hidden(&[&human, &json], &secrets);
    assert_eq!(
        key(&v, "mongodb.passwordFile"),
        (&Value::from("secrets/file.pw"), "dcb.yaml:3")
    );
    assert_eq!(
        line(&human, "mongodb.passwordFile"),
        ["mongodb.passwordFile", "secrets/file.pw", "dcb.yaml:3"]
    );
    assert_eq!(
        key(&v, "mongodb.uri"),
        (
            &Value::from("mongodb://backup@db.local/dcMes"),
            "dcb.yaml:2"
        )
    );

    let env_file = s.path().join("secrets/env.pw");
    let env_file = env_file.to_str().unwrap();
    let (human, json, v) = config(&s, &[], &[("DCB_MONGODB_PASSWORD_FILE", env_file)]);
    assert_hidden(&[&human, &json], &secrets);
    assert_eq!(
        key(&v, "mongodb.passwordFile"),
        (&Value::from(env_file), "env DCB_MONGODB_PASSWORD_FILE")
    );
}

// Notifier credentials (robot URLs' tokens, signing secrets, SMTP passwords, webhook
// header values) are `***`; the rest of each notifier is shown.
#[test]
fn notifier_secrets_are_hidden() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    s.write(
        "dcb.yaml",
        "alerts:\n  notifiers:\n\
         \x20   - {type: dingtalk, url: 'https://oapi.dingtalk.com/robot/send?access_token=T0kenDing', secret: SECd1ngSecret}\n\
         \x20   - {type: feishu, url: 'https://open.feishu.cn/open-apis/bot/v2/hook/T0kenFeishu', secret: SECfe1shu}\n\
         \x20   - {type: wecom, url: 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=T0kenWecom'}\n\
         \x20   - {type: slack, url: 'https://hooks.slack.com/services/T0kenSlack'}\n\
         \x20   - {type: webhook, url: 'https://user:Ba5icPw@hc.example/ping/T0kenHook', headers: {Authorization: 'Bearer T0kenHeader'}}\n\
         \x20   - {type: email, host: smtp.local, username: dcb, password: Smtp5ecret, from: a@b.cn, to: [c@d.cn]}\n",
    );
    let (human, json, v) = config(&s, &[], &[]);
    assert_hidden(
        &[&human, &json],
        &[
            "T0kenDing",
            "SECd1ngSecret",
            "T0kenFeishu",
            "SECfe1shu",
            "T0kenWecom",
            "T0kenSlack",
            "Ba5icPw",
            "T0kenHook",
            "T0kenHeader",
            "Smtp5ecret",
        ],
    );
    for (k, value, line) in [
        ("0.url", "https://oapi.dingtalk.com/***", 3),
        ("0.secret", "***", 3),
        ("1.secret", "***", 4),
        ("2.url", "https://qyapi.weixin.qq.com/***", 5),
        ("3.url", "https://hooks.slack.com/***", 6),
        ("4.url", "https://hc.example/***", 7),
        ("4.headers.Authorization", "***", 7),
        ("5.password", "***", 8),
        ("5.username", "dcb", 8),
        ("5.host", "smtp.local", 8),
    ] {
        let k = format!("alerts.notifiers.{k}");
        assert_eq!(
            key(&v, &k),
            (&Value::from(value), format!("dcb.yaml:{line}").as_str()),
            "{k}"
        );
    }
    assert_eq!(
        key(&v, "alerts.notifiers.5.tls"),
        (&Value::from("starttls"), "default")
    );
}

// With distinct values in each place, a flag beats its environment variable, which
// beats dcb.yaml, which beats the default; each value says where it came from.
#[test]
fn flag_beats_environment_beats_file() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    s.write("file-policies/demo.yaml", POLICY);
    s.write("env-policies/demo.yaml", POLICY);
    s.write("flag-policies/demo.yaml", POLICY);
    s.write(
        "dcb.yaml",
        "timezone: Asia/Shanghai\nbackupRoot: file-root\npoliciesDir: file-policies\n",
    );

    let (human, _, v) = config(&s, &[], &[]);
    assert_eq!(
        key(&v, "backupRoot"),
        (&Value::from("file-root"), "dcb.yaml:2")
    );
    assert_eq!(
        key(&v, "policiesDir"),
        (&Value::from("file-policies"), "dcb.yaml:3")
    );
    assert_eq!(
        line(&human, "backupRoot"),
        ["backupRoot", "file-root", "dcb.yaml:2"]
    );
    assert_eq!(
        key(&v, "concurrency"),
        (&Value::from(3), "default"),
        "unset keys are defaults"
    );

    let env = [
        ("DCB_BACKUP_ROOT", "env-root"),
        ("DCB_POLICIES_DIR", "env-policies"),
    ];
    let (human, _, v) = config(&s, &[], &env);
    assert_eq!(
        key(&v, "backupRoot"),
        (&Value::from("env-root"), "env DCB_BACKUP_ROOT")
    );
    assert_eq!(
        key(&v, "policiesDir"),
        (&Value::from("env-policies"), "env DCB_POLICIES_DIR")
    );
    assert_eq!(
        line(&human, "backupRoot"),
        ["backupRoot", "env-root", "env DCB_BACKUP_ROOT"]
    );

    // Flags before and after the subcommand.
    let (human, _, v) = config(
        &s,
        &["--backup-root", "flag-root", "--policies=flag-policies"],
        &env,
    );
    assert_eq!(
        key(&v, "backupRoot"),
        (&Value::from("flag-root"), "flag --backup-root")
    );
    assert_eq!(
        key(&v, "policiesDir"),
        (&Value::from("flag-policies"), "flag --policies")
    );
    assert_eq!(
        line(&human, "policiesDir"),
        ["policiesDir", "flag-policies", "flag --policies"]
    );
    assert_eq!(v["policies"][0]["file"], "flag-policies/demo.yaml");

    // The config file: DCB_CONFIG, then --config.
    s.write("other.yaml", "backupRoot: other-root\n");
    s.write("third.yaml", "backupRoot: third-root\n");
    let (_, _, v) = config(&s, &[], &[("DCB_CONFIG", "other.yaml")]);
    assert_eq!(
        key(&v, "config"),
        (&Value::from("other.yaml"), "env DCB_CONFIG")
    );
    assert_eq!(
        key(&v, "backupRoot"),
        (&Value::from("other-root"), "other.yaml:1")
    );
    let mut cmd = s.dcb();
    cmd.args(["config", "--json", "--config", "third.yaml"])
        .env("DCB_CONFIG", "other.yaml");
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        key(&v, "config"),
        (&Value::from("third.yaml"), "flag --config")
    );
    assert_eq!(
        key(&v, "backupRoot"),
        (&Value::from("third-root"), "third.yaml:1")
    );
}

// Every policy is listed as a run resolves it: values set in the file at their line,
// values inherited from dcb.yaml at dcb.yaml's line, defaults as defaults, and each
// collection's own overrides.
#[test]
fn policies_are_listed_resolved() {
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        "database: dcMes\ntimezone: Europe/Berlin\nconcurrency: 5\n\
         encryption:\n  recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]\n",
    );
    s.write(
        "policies/core.yaml",
        "name: core\n\
         schedule: \"0 */6 * * *\"\n\
         full: 7d\n\
         collections:\n\
         \x20 - work_orders\n\
         \x20 - name: roles\n\
         \x20   timeField: updatedAt\n\
         \x20   mode: snapshot\n\
         retention: 7d\n\
         compression:\n\
         \x20 level: 9\n",
    );
    s.write(
        "policies/hot.yaml",
        "name: hot\nschedule: \"0 * * * *\"\ntimezone: Asia/Shanghai\ndatabase: mes_hot\n\
         concurrency: 2\ncollections: [api_logs]\nretention: 72h\nenabled: false\n",
    );
    let (human, _, v) = config(&s, &[], &[]);
    let policies = v["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2, "{v:#}");
    let core = &policies[0];
    assert_eq!(core["name"], "core");
    assert_eq!(core["file"], "policies/core.yaml");
    let get = |obj: &Value, k: &str| (obj[k]["value"].clone(), obj[k]["origin"].clone());
    let st = &core["settings"];
    for (k, value, origin) in [
        (
            "schedule",
            Value::from("0 */6 * * *"),
            "policies/core.yaml:2",
        ),
        ("timezone", Value::from("Europe/Berlin"), "dcb.yaml:2"),
        ("database", Value::from("dcMes"), "dcb.yaml:1"),
        ("concurrency", Value::from(5), "dcb.yaml:3"),
        ("full", Value::from("7d"), "policies/core.yaml:3"),
        ("retention", Value::from("7d"), "policies/core.yaml:9"),
        ("compression.level", Value::from(9), "policies/core.yaml:11"),
        ("keepLast", Value::from(1), "default"),
        ("timeField", Value::from("createdAt"), "default"),
        ("window.initial", Value::from("today"), "default"),
        ("window.settle", Value::from("1m"), "default"),
        ("enabled", Value::from(true), "default"),
        (
            "encryption.recipients",
            serde_json::json!(["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]),
            "dcb.yaml:5",
        ),
    ] {
        assert_eq!(get(st, k), (value, Value::from(origin)), "core {k}");
    }
    let cols = core["collections"].as_array().unwrap();
    assert_eq!(cols[0]["name"], "work_orders");
    let wo = &cols[0]["settings"];
    assert_eq!(
        get(wo, "timeField"),
        (Value::from("createdAt"), Value::from("default"))
    );
    assert_eq!(
        get(wo, "full"),
        (Value::from("7d"), Value::from("policies/core.yaml:3"))
    );
    assert_eq!(cols[1]["name"], "roles");
    let roles = &cols[1]["settings"];
    assert_eq!(
        get(roles, "timeField"),
        (
            Value::from("updatedAt"),
            Value::from("policies/core.yaml:7")
        )
    );
    assert_eq!(
        get(roles, "mode"),
        (Value::from("snapshot"), Value::from("policies/core.yaml:8"))
    );

    let hot = &policies[1]["settings"];
    for (k, value, origin) in [
        (
            "timezone",
            Value::from("Asia/Shanghai"),
            "policies/hot.yaml:3",
        ),
        ("database", Value::from("mes_hot"), "policies/hot.yaml:4"),
        ("concurrency", Value::from(2), "policies/hot.yaml:5"),
        ("enabled", Value::from(false), "policies/hot.yaml:8"),
    ] {
        assert_eq!(get(hot, k), (value, Value::from(origin)), "hot {k}");
    }

    // The human form names each policy and collection.
    assert!(
        human.stdout.contains("policy core  (policies/core.yaml)"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("  collection roles"),
        "{}",
        human.stdout
    );
    assert_eq!(
        line(&human, "timezone"),
        ["timezone", "Europe/Berlin", "dcb.yaml:2"]
    );
}

// A database taken from the URI's path says so, with the URI's origin (here the
// environment); the URI's password stays hidden there too.
#[test]
fn database_from_the_uri() {
    let s = Scratch::new();
    s.write(
        "policies/demo.yaml",
        "name: demo\nschedule: \"0 2 * * *\"\ncollections: [roles]\nretention: 30d\n",
    );
    let (human, json, v) = config(
        &s,
        &[],
        &[("DCB_MONGODB_URI", "mongodb://u:Ur1Secret@h/fromUri")],
    );
    assert_hidden(&[&human, &json], &["Ur1Secret"]);
    let db = &v["policies"][0]["settings"]["database"];
    assert_eq!(db["value"], "fromUri");
    assert_eq!(db["origin"], "env DCB_MONGODB_URI (the URI's database)");
}

// A configuration error exits 2 with the diagnostics every other command gives; a
// policy that cannot run (no database anywhere) is reported as `dcb plan` reports it.
#[test]
fn configuration_errors_exit_2() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    s.write(
        "dcb.yaml",
        "mongodb:\n  uri: mongodb://u:${UNSET_PW_T}@h/db\nbackupRot: x\n",
    );
    let config = s.run(&["config"]);
    let plan = s.run(&["plan"]);
    assert_eq!(config.code, 2, "{}", config.stderr);
    assert_eq!(config.stderr, plan.stderr);
    assert!(config.stderr.contains("unknown-field"), "{}", config.stderr);
    assert!(config.stderr.contains("UNSET_PW_T"), "{}", config.stderr);
    assert!(config.stdout.is_empty(), "{}", config.stdout);

    let missing = s.run(&["config", "--config", "nowhere.yaml"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("config file not found"),
        "{}",
        missing.stderr
    );

    std::fs::remove_file(s.path().join("dcb.yaml")).unwrap();
    s.write(
        "policies/demo.yaml",
        "name: demo\nschedule: \"0 2 * * *\"\ncollections: [roles]\nretention: 30d\n",
    );
    let config = s.run(&["config", "--json"]);
    let plan = s.run(&["plan"]);
    assert_eq!(config.code, 2);
    assert_eq!(config.stderr, plan.stderr);
    assert!(
        config.stderr.contains("names no database"),
        "{}",
        config.stderr
    );
    // What could be resolved is still shown, and still JSON.
    let v: Value = serde_json::from_str(&config.stdout).unwrap();
    assert_eq!(
        v["policies"][0]["settings"]["database"]["value"],
        Value::Null
    );

    s.write("policies/demo.yaml", "name: demo\nschedule: nope\n");
    let config = s.run(&["config"]);
    let plan = s.run(&["plan"]);
    assert_eq!(config.code, 2);
    assert_eq!(config.stderr, plan.stderr);
    assert!(config.stderr.contains("invalid-cron"), "{}", config.stderr);
}

// S3 targets show their settings and where their credentials come from, never what
// they are: one from the default variables (set in the environment), one from a
// variable and a file that dcb.yaml names (the file is not read). Folder targets,
// the default targets, the lock and the exclusions show with their lines.
#[test]
fn storage_targets_and_their_credentials() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    s.write(
        "policies/hot.yaml",
        "name: hot\nschedule: \"0 * * * *\"\ndatabase: dcMes\n\
         collections:\n  - api_logs\n  - name: \"*_logs\"\n    mode: snapshot\n\
         retention: 3d\ntargets: [local, second]\n",
    );
    s.write("secrets/second.key", "Fil3SecretKey\n");
    s.write(
        "dcb.yaml",
        "backupRoot: root\n\
         targets:\n\
         \x20 offsite:\n\
         \x20   type: s3\n\
         \x20   bucket: factory-backups\n\
         \x20   prefix: site-a\n\
         \x20   endpoint: http://minio.local:9000\n\
         \x20 second:\n\
         \x20   type: s3\n\
         \x20   bucket: other-bucket\n\
         \x20   accessKeyIdEnv: SECOND_KEY_ID\n\
         \x20   secretAccessKeyFile: secrets/second.key\n\
         \x20 nas:\n\
         \x20   type: local\n\
         \x20   path: nas-copy\n\
         defaultTargets: [local, offsite]\n\
         lock: {kind: mongodb, ttl: 2m}\n\
         exclude: [\"tmp_*\"]\n",
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAENVDEFAULT"),
        ("AWS_SECRET_ACCESS_KEY", "EnvDefaultS3cret"),
        ("SECOND_KEY_ID", "AKIASECONDNAMED"),
    ];
    let (human, json, v) = config(&s, &[], &env);
    assert_hidden(
        &[&human, &json],
        &[
            "AKIAENVDEFAULT",
            "EnvDefaultS3cret",
            "AKIASECONDNAMED",
            "Fil3SecretKey",
        ],
    );
    let key_file = std::path::Path::new("secrets").join("second.key");
    let key_file = format!("file {} (named at dcb.yaml:12)", key_file.display());
    for (k, value, origin) in [
        ("targets.local.path", Value::from("root"), "dcb.yaml:1"),
        ("targets.offsite.type", Value::from("s3"), "dcb.yaml:4"),
        (
            "targets.offsite.bucket",
            Value::from("factory-backups"),
            "dcb.yaml:5",
        ),
        (
            "targets.offsite.prefix",
            Value::from("site-a"),
            "dcb.yaml:6",
        ),
        (
            "targets.offsite.endpoint",
            Value::from("http://minio.local:9000"),
            "dcb.yaml:7",
        ),
        (
            "targets.offsite.region",
            Value::from("us-east-1"),
            "default",
        ),
        ("targets.offsite.pathStyle", Value::from(true), "default"),
        (
            "targets.offsite.accessKeyId",
            Value::from("***"),
            "env AWS_ACCESS_KEY_ID",
        ),
        (
            "targets.offsite.secretAccessKey",
            Value::from("***"),
            "env AWS_SECRET_ACCESS_KEY",
        ),
        ("targets.second.prefix", Value::Null, "default"),
        (
            "targets.second.endpoint",
            Value::from("https://s3.us-east-1.amazonaws.com"),
            "default",
        ),
        (
            "targets.second.accessKeyId",
            Value::from("***"),
            "env SECOND_KEY_ID (named at dcb.yaml:11)",
        ),
        (
            "targets.second.secretAccessKey",
            Value::from("***"),
            key_file.as_str(),
        ),
        ("targets.nas.type", Value::from("local"), "dcb.yaml:14"),
        ("targets.nas.path", Value::from("nas-copy"), "dcb.yaml:15"),
        (
            "defaultTargets",
            serde_json::json!(["local", "offsite"]),
            "dcb.yaml:16",
        ),
        ("lock.kind", Value::from("mongodb"), "dcb.yaml:17"),
        ("lock.ttl", Value::from("2m"), "dcb.yaml:17"),
        ("lock.database", Value::from("dcb"), "default"),
        ("exclude", serde_json::json!(["tmp_*"]), "dcb.yaml:18"),
    ] {
        assert_eq!(key(&v, k), (&value, origin), "{k}");
    }
    for (k, value, origin) in [
        (
            "targets.offsite.secretAccessKey",
            "***",
            "env AWS_SECRET_ACCESS_KEY",
        ),
        ("targets.second.secretAccessKey", "***", key_file.as_str()),
        (
            "targets.second.accessKeyId",
            "***",
            "env SECOND_KEY_ID (named at dcb.yaml:11)",
        ),
    ] {
        assert_eq!(line(&human, k), [k, value, origin]);
    }
    // Not listed twice by the walk over the rest of dcb.yaml.
    assert!(
        v["config"]
            .get("targets.second.secretAccessKeyFile")
            .is_none()
    );
    assert!(v["config"].get("lock").is_none());

    // Unset credentials are `null`, still with their source.
    let (_, _, v) = config(&s, &[], &[]);
    assert_eq!(
        key(&v, "targets.offsite.secretAccessKey"),
        (&Value::Null, "env AWS_SECRET_ACCESS_KEY")
    );

    // Every policy shows its targets (its own, or the default ones) and its lock, and
    // its patterns as patterns.
    let policies = v["policies"].as_array().unwrap();
    let by_name = |n: &str| policies.iter().find(|p| p["name"] == n).unwrap();
    let get = |p: &Value, k: &str| {
        (
            p["settings"][k]["value"].clone(),
            p["settings"][k]["origin"].clone(),
        )
    };
    assert_eq!(
        get(by_name("demo"), "targets"),
        (
            serde_json::json!(["local", "offsite"]),
            "dcb.yaml:16".into()
        )
    );
    assert_eq!(
        get(by_name("hot"), "targets"),
        (
            serde_json::json!(["local", "second"]),
            "policies/hot.yaml:9".into()
        )
    );
    assert_eq!(
        get(by_name("hot"), "lock"),
        ("mongodb".into(), "dcb.yaml:17".into())
    );
    let cols = by_name("hot")["collections"].as_array().unwrap();
    assert_eq!(cols[1]["name"], "*_logs");
    assert_eq!(cols[1]["pattern"], true);
    assert_eq!(cols[1]["settings"]["mode"]["origin"], "policies/hot.yaml:7");
    assert_eq!(cols[0]["pattern"], false);
}

// `lock: auto` (the default) takes a lease for a policy that writes to S3 and a local
// lock for one that does not, and says why.
#[test]
fn automatic_lock_per_policy() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    s.write(
        "policies/offsite.yaml",
        "name: offsite\nschedule: \"0 * * * *\"\ndatabase: dcMes\ncollections: [roles]\n\
         retention: 3d\ntargets: [offsite]\n",
    );
    s.write(
        "dcb.yaml",
        "targets:\n  offsite: {type: s3, bucket: factory-backups}\n",
    );
    let (human, _, v) = config(&s, &[], &[]);
    assert_eq!(key(&v, "lock.kind"), (&Value::from("auto"), "default"));
    assert_eq!(
        key(&v, "defaultTargets"),
        (&serde_json::json!(["local"]), "default")
    );
    let policies = v["policies"].as_array().unwrap();
    let lock = |n: &str| {
        let p = policies.iter().find(|p| p["name"] == n).unwrap();
        (
            p["settings"]["lock"]["value"].clone(),
            p["settings"]["lock"]["origin"].clone(),
        )
    };
    assert_eq!(
        lock("demo"),
        ("local".into(), "default (auto: no S3 target)".into())
    );
    assert_eq!(
        lock("offsite"),
        ("mongodb".into(), "default (auto: it writes to S3)".into())
    );
    assert!(
        human
            .stdout
            .contains("policy offsite  (policies/offsite.yaml)"),
        "{}",
        human.stdout
    );
}
