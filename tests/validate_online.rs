//! `dcb validate --online` against a real MongoDB wire-protocol server.

mod support;

use mongodb::IndexModel;
use mongodb::bson::{DateTime, doc};
use support::{Run, Scratch};

const POLICY: &str = "\
name: demo
schedule: \"0 * * * *\"
collections:
  - api_logs
  - name: roles
    timeField: updatedAt
  - chat
  - name: dicttypes
    mode: snapshot
retention: 3d
";

async fn seed(db: &str) {
    let client = support::client().await;
    let db = client.database(db);
    let now = DateTime::now();
    db.collection("api_logs")
        .insert_one(doc! {"createdAt": now, "path": "/api/scan"})
        .await
        .unwrap();
    db.collection::<mongodb::bson::Document>("api_logs")
        .create_index(IndexModel::builder().keys(doc! {"createdAt": 1}).build())
        .await
        .unwrap();
    db.collection("roles")
        .insert_one(doc! {"updatedAt": now, "name": "admin"})
        .await
        .unwrap();
    db.collection("dicttypes")
        .insert_one(doc! {"code": "line"})
        .await
        .unwrap();
}

// Missing collections and unindexed time fields are warnings at the collection's
// line; an indexed collection and a snapshot collection raise nothing.
#[tokio::test]
async fn warns_about_missing_collections_and_indexes() {
    let db = support::unique_db("online");
    seed(&db).await;
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    let uri = support::uri_with_db(&db);
    let run = Run::from(
        s.dcb()
            .args(["validate", "--online"])
            .env("DCB_MONGODB_URI", &uri)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("warning[unindexed-time-field]: a window on `roles.updatedAt` scans the whole collection"), "{}", run.stdout);
    assert!(
        run.stdout.contains("--> policies/demo.yaml:5:11"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("db.roles.createIndex({ updatedAt: 1 })"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "warning[missing-collection]: collection `chat` does not exist in `{db}`"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("--> policies/demo.yaml:7:5"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("api_logs"), "{}", run.stdout);
    assert!(!run.stdout.contains("dicttypes"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 policy valid, 2 warnings"),
        "{}",
        run.stdout
    );

    let run = Run::from(
        s.dcb()
            .args(["validate", "--online", "--deny-warnings"])
            .env("DCB_MONGODB_URI", &uri)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1);
}

// An unreachable server is an error (exit 1) whose message never shows the password.
#[test]
fn unreachable_server_is_an_error_without_the_password() {
    let s = Scratch::new();
    s.write("policies/demo.yaml", POLICY);
    let run = Run::from(
        s.dcb()
            .args(["validate", "--online"])
            .env(
                "DCB_MONGODB_URI",
                "mongodb://backup:hunter2secret@127.0.0.1:9/dcMes?serverSelectionTimeoutMS=500&connectTimeoutMS=500",
            )
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("error[database-unreachable]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("mongodb://backup:***@127.0.0.1:9"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("hunter2secret") && !run.stderr.contains("hunter2secret"));
}
