//! The write limit for the restore benchmark: the documents of a decompressed `.bson`
//! file (concatenated BSON, as in a dcb or mongodump archive) inserted through the
//! same driver, in the same batches as `dcb restore` (10,000 documents or 16 MiB,
//! whichever comes first; src/restore/write.rs) with `insert_many(..).ordered(false)`,
//! one batch at a time, then the `{createdAt: 1}` index, as dcb recreates it from the
//! archive's metadata.
//!
//!     bare_insert URI DB COLLECTION FILE [--no-index]
//!
//! The file is streamed (read a batch, insert it, read the next), so memory stays at
//! one batch, like dcb's. Prints `DOCS BYTES INSERT_S INDEX_S`: the documents and BSON
//! bytes inserted, and the seconds spent in the inserts and in the index build.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::time::Instant;

use mongodb::bson::{RawDocumentBuf, doc};

/// dcb's batch limits (src/restore/write.rs, BATCH_DOCS and BATCH_BYTES).
const BATCH_DOCS: usize = 10_000;
const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// The next document of the stream, or None at its end.
fn next_document(r: &mut impl Read) -> Result<Option<RawDocumentBuf>, Box<dyn std::error::Error>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = i32::from_le_bytes(len);
    if !(5..=16 * 1024 * 1024 + 16 * 1024).contains(&n) {
        return Err(format!("impossible document length {n}").into());
    }
    let mut bytes = vec![0u8; n as usize];
    bytes[..4].copy_from_slice(&len);
    r.read_exact(&mut bytes[4..])?;
    Ok(Some(RawDocumentBuf::from_bytes(bytes)?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let index = match args.get(5).map(String::as_str) {
        None => true,
        Some("--no-index") => false,
        Some(_) => {
            eprintln!("usage: bare_insert URI DB COLLECTION FILE [--no-index]");
            std::process::exit(2);
        }
    };
    if args.len() < 5 {
        eprintln!("usage: bare_insert URI DB COLLECTION FILE [--no-index]");
        std::process::exit(2);
    }
    let client = mongodb::Client::with_uri_str(&args[1]).await?;
    let db = client.database(&args[2]);
    let coll = db.collection::<RawDocumentBuf>(&args[3]);
    let mut file = BufReader::with_capacity(1 << 20, File::open(&args[4])?);

    let (mut docs, mut total) = (0u64, 0u64);
    let mut insert_s = 0.0;
    let mut batch = Vec::with_capacity(BATCH_DOCS);
    let mut bytes = 0usize;
    loop {
        let doc = next_document(&mut file)?;
        let end = doc.is_none();
        if let Some(d) = doc {
            bytes += d.as_bytes().len();
            batch.push(d);
        }
        if !batch.is_empty() && (end || batch.len() >= BATCH_DOCS || bytes >= BATCH_BYTES) {
            let t = Instant::now();
            coll.insert_many(&batch).ordered(false).await?;
            insert_s += t.elapsed().as_secs_f64();
            docs += batch.len() as u64;
            total += bytes as u64;
            batch.clear();
            bytes = 0;
        }
        if end {
            break;
        }
    }

    let mut index_s = 0.0;
    if index {
        // The same command dcb sends for the archive's metadata.
        let t = Instant::now();
        db.run_command(doc! {
            "createIndexes": &args[3],
            "indexes": [{"key": {"createdAt": 1}, "name": "createdAt_1"}],
        })
        .await?;
        index_s = t.elapsed().as_secs_f64();
    }
    println!("{docs} {total} {insert_s:.3} {index_s:.3}");
    Ok(())
}
