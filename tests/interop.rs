//! The real MongoDB tools read dcb's archives: every archive of one run extracts into
//! one folder without collisions, stock `mongorestore` restores it with its indexes,
//! and `bsondump` reads every `.bson` member.

mod support;

use std::process::Command;

use futures_util::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::{Document, RawDocumentBuf, doc};
use support::{Run, Scratch};

// Extract all archives of a run into one folder, mongorestore it into a new database,
// and compare: same documents byte for byte, indexes recreated; bsondump agrees on
// counts.
#[tokio::test]
async fn mongorestore_and_bsondump_read_dcb_archives() {
    let tools = support::mongo_tools();
    let db = support::unique_db("interop");
    let restored = format!("{db}_restored");
    let client = support::client().await;
    let src = client.database(&db);
    let now = mongodb::bson::DateTime::now();
    let logs: Vec<Document> = (0..700)
        .map(|i| doc! {"createdAt": now, "barcode": format!("BC{i:06}"), "qty": i, "nested": {"a": [1, 2, {"b": "c"}]}})
        .collect();
    src.collection::<Document>("api_logs")
        .insert_many(logs)
        .await
        .unwrap();
    src.collection::<Document>("api_logs")
        .create_index(IndexModel::builder().keys(doc! {"createdAt": 1}).build())
        .await
        .unwrap();
    src.collection::<Document>("roles")
        .insert_many((0..5).map(|i| doc! {"name": format!("r{i}"), "updatedAt": now}))
        .await
        .unwrap();
    src.collection::<Document>("roles")
        .create_index(
            IndexModel::builder()
                .keys(doc! {"name": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();

    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        &format!(
            "name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow: {{initial: all, settle: 0s}}\n\
             collections: [api_logs, {{name: roles, mode: snapshot}}]\nretention: 7d\n"
        ),
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let run = Run::from(
        s.dcb()
            .args(["run", "--policy", "p"])
            .env("DCB_MONGODB_URI", &support::server().uri)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // Every archive of the run into one folder, with the system's tar.
    let out = s.path().join("extracted");
    std::fs::create_dir(&out).unwrap();
    let root = s.path().join("backups");
    let mut all = support::archives(&root, "p", "api_logs");
    all.extend(support::archives(&root, "p", "roles"));
    assert_eq!(all.len(), 2);
    for archive in &all {
        let status = Command::new("tar")
            .arg("--keep-old-files")
            .arg("-xzf")
            .arg(archive)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "tar refused {} (a collision?)",
            archive.display()
        );
    }

    // bsondump reads each .bson member and counts what the manifests say.
    for (coll, n) in [("api_logs", 700), ("roles", 5)] {
        let bson = out.join(&db).join(format!("{coll}.bson"));
        let dump = Command::new(tools.join("bsondump"))
            .arg(&bson)
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "{}",
            String::from_utf8_lossy(&dump.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&dump.stdout).lines().count(),
            n,
            "{coll}"
        );
    }

    let restore = Command::new(tools.join("mongorestore"))
        .arg("--uri")
        .arg(&support::server().uri)
        .arg("--dir")
        .arg(&out)
        .arg("--nsFrom")
        .arg(format!("{db}.*"))
        .arg("--nsTo")
        .arg(format!("{restored}.*"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&restore.stderr);
    assert!(restore.status.success(), "{log}");
    assert!(
        log.contains("705 document(s) restored successfully. 0 document(s) failed"),
        "{log}"
    );

    let dst = client.database(&restored);
    for coll in ["api_logs", "roles"] {
        let a: Vec<RawDocumentBuf> = src
            .collection::<RawDocumentBuf>(coll)
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let b: Vec<RawDocumentBuf> = dst
            .collection::<RawDocumentBuf>(coll)
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(a.len(), b.len(), "{coll}");
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.as_bytes() == y.as_bytes()),
            "{coll} differs"
        );
    }
    let names = dst
        .collection::<Document>("roles")
        .list_index_names()
        .await
        .unwrap();
    assert!(names.contains(&"name_1".to_string()), "{names:?}");
    let names = dst
        .collection::<Document>("api_logs")
        .list_index_names()
        .await
        .unwrap();
    assert!(names.contains(&"createdAt_1".to_string()), "{names:?}");
    // The unique option survived.
    let dup = dst
        .collection::<Document>("roles")
        .insert_one(doc! {"name": "r0"})
        .await;
    let err = dup.expect_err("the unique index was not restored as unique");
    let code = match *err.kind {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(ref w)) => {
            Some(w.code)
        }
        _ => None,
    };
    assert_eq!(
        code,
        Some(11000),
        "a duplicate-key error (E11000) from the unique index: {err}"
    );
}
