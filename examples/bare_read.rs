//! The read limit for the benchmark: the same query dcb runs, through the same driver
//! and batch size, discarding every document.
//!
//!     bare_read URI DB COLLECTION all
//!     bare_read URI DB COLLECTION FROM_MS TO_MS   # {createdAt: {$gte, $lt}}

use mongodb::bson::{DateTime, Document, RawDocumentBuf, doc};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let all = args.len() == 5 && args[4] == "all";
    if !all && args.len() != 6 {
        eprintln!("usage: bare_read URI DB COLLECTION (all | FROM_MS TO_MS)");
        std::process::exit(2);
    }
    let client = mongodb::Client::with_uri_str(&args[1]).await?;
    let coll = client
        .database(&args[2])
        .collection::<RawDocumentBuf>(&args[3]);
    // Natural order with no filter, as dcb scans for `initial: all`; else the index
    // range dcb asks for a bounded window.
    let filter: Document = if all {
        doc! {}
    } else {
        let from = DateTime::from_millis(args[4].parse()?);
        let to = DateTime::from_millis(args[5].parse()?);
        doc! {"createdAt": {"$gte": from, "$lt": to}}
    };
    // dcb's batch size (src/export.rs, BATCH_DOCS).
    let mut cursor = coll.find(filter).batch_size(4096).await?;
    let (mut docs, mut bytes) = (0u64, 0u64);
    while cursor.advance().await? {
        docs += 1;
        bytes += cursor.current().as_bytes().len() as u64;
    }
    println!("{docs} {bytes}");
    Ok(())
}
