//! `examples/kubernetes/`: valid against the Kubernetes schemas (PyPI
//! `kubernetes-validate`, strict), one CronJob per shipped policy that runs it on the
//! policy's own schedule and never twice at once, the mounted policies identical to
//! `policies/`, and the mounted configuration and policies accepted by `dcb validate`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use support::Scratch;

fn dir() -> PathBuf {
    support::project_root().join("examples/kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of every manifest.
fn documents() -> Vec<Value> {
    manifests()
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            serde_yaml::Deserializer::from_str(&text)
                .map(|d| Value::deserialize(d).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

use serde::Deserialize;

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn validator() -> PathBuf {
    let venv = support::project_root().join(".venv");
    ["bin/kubernetes-validate", "Scripts/kubernetes-validate.exe"]
        .iter()
        .map(|p| venv.join(p))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no kubernetes-validate: run `scripts/setup-test-env.sh` (installs it into \
                 .venv from scripts/requirements-test.txt)"
            )
        })
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new(validator())
        .args(["--strict", "--kubernetes-version", "1.31.0"])
        .args(files)
        .output()
        .expect("run kubernetes-validate")
}

#[test]
fn manifests_are_valid_kubernetes() {
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    let out = validate(&files);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        documents().len(),
        "every document was checked: {text}"
    );
    // The validator refuses what Kubernetes would (so the pass above means something):
    // a field of the wrong type, a field Kubernetes does not know.
    let scratch = Scratch::new();
    let cron = std::fs::read_to_string(dir().join("cronjobs.yaml")).unwrap();
    for (from, to) in [
        (
            "startingDeadlineSeconds: 600",
            "startingDeadlineSeconds: soon",
        ),
        (
            "concurrencyPolicy: Forbid",
            "concurrencyPolicy: Forbid\n  concurrency: 1",
        ),
    ] {
        let bad = scratch.write("bad.yaml", &cron.replacen(from, to, 1));
        assert!(!validate(&[bad]).status.success(), "{to} passed");
    }
}

#[test]
fn a_cronjob_per_shipped_policy_on_its_schedule() {
    let docs = documents();
    let crons = of_kind(&docs, "CronJob");
    let policies = support::project_root().join("policies");
    let mut shipped: Vec<(String, Value)> = std::fs::read_dir(&policies)
        .unwrap()
        .flatten()
        .map(|e| {
            let v: Value =
                serde_yaml::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
            (v["name"].as_str().unwrap().to_string(), v)
        })
        .collect();
    shipped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(crons.len(), shipped.len());
    for (name, policy) in &shipped {
        let cron = crons
            .iter()
            .find(|c| {
                let args =
                    &c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
                let args: Vec<&str> = args
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                args.windows(3)
                    .any(|w| w == ["run", "--policy", name.as_str()])
            })
            .unwrap_or_else(|| panic!("no CronJob runs policy {name}"));
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid", "{name}");
        assert_eq!(cron["spec"]["schedule"], policy["schedule"], "{name}");
        assert_eq!(cron["spec"]["timeZone"], policy["timezone"], "{name}");
    }
}

/// The mounts of the CronJobs, laid out in a folder: `etc/dcb/dcb.yaml`, the policies
/// under `etc/dcb/policies/`, paths in dcb.yaml rewritten under the folder.
fn mounted(root: &Path) -> PathBuf {
    let docs = documents();
    let maps = of_kind(&docs, "ConfigMap");
    let data = |name: &str| {
        maps.iter()
            .find(|m| m["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))["data"]
            .as_mapping()
            .unwrap()
            .clone()
    };
    let etc = root.join("etc/dcb");
    std::fs::create_dir_all(etc.join("policies")).unwrap();
    for (file, text) in data("dcb-policies") {
        std::fs::write(
            etc.join("policies").join(file.as_str().unwrap()),
            text.as_str().unwrap(),
        )
        .unwrap();
    }
    let config = data("dcb-config")["dcb.yaml"].as_str().unwrap().to_string();
    let config = config
        .replace("/etc/dcb", &etc.to_string_lossy())
        .replace("/var/lib/dcb", &root.join("var/lib/dcb").to_string_lossy());
    let path = etc.join("dcb.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn mounted_policies_are_the_shipped_ones_and_validate() {
    let scratch = Scratch::new();
    let config = mounted(scratch.path());
    let policies = support::project_root().join("policies");
    let mounted_dir = config.parent().unwrap().join("policies");
    let names = |d: &Path| {
        let mut n: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&mounted_dir), names(&policies));
    for name in names(&policies) {
        assert_eq!(
            std::fs::read(mounted_dir.join(&name)).unwrap(),
            std::fs::read(policies.join(&name)).unwrap(),
            "examples/kubernetes/policies.yaml differs from policies/{name}: copy it again"
        );
    }
    let out = scratch
        .dcb()
        .arg("--config")
        .arg(&config)
        .args(["validate", "--deny-warnings"])
        .env(
            "DCB_MONGODB_URI",
            "mongodb://backup:pw@mongodb.mes.svc:27017/dcMes",
        )
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "example-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The configuration as the pods get it: an S3 target, the lease.
    let text = std::fs::read_to_string(&config).unwrap();
    let v: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(v["targets"]["offsite"]["type"], "s3");
    assert_eq!(v["defaultTargets"][0], "offsite");
    assert_eq!(v["lock"]["kind"], "mongodb");
}
