//! `<db>/<collection>.metadata.json` in mongodump's shape (canonical extended JSON),
//! so that `mongorestore` recreates the collection's options and indexes.

use mongodb::Database;
use mongodb::bson::{Bson, Document, doc, spec::BinarySubtype};

use super::ExportError;

/// The collection's listCollections entry, or why there is none.
pub async fn collection_info(db: &Database, collection: &str) -> Result<Document, ExportError> {
    let reply = db
        .run_command(doc! {"listCollections": 1, "filter": {"name": collection}})
        .await
        .map_err(ExportError::from_mongo)?;
    let first = reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .and_then(|b| b.first())
        .and_then(Bson::as_document)
        .cloned();
    match first {
        Some(info) => Ok(info),
        None => {
            let names = db
                .list_collection_names()
                .await
                .map_err(ExportError::from_mongo)?;
            if names.is_empty() {
                Err(ExportError::DatabaseMissing(db.name().to_string()))
            } else {
                Err(ExportError::CollectionMissing {
                    database: db.name().to_string(),
                    collection: collection.to_string(),
                })
            }
        }
    }
}

pub async fn indexes(db: &Database, collection: &str) -> Result<Vec<Bson>, ExportError> {
    let reply = db
        .run_command(doc! {"listIndexes": collection})
        .await
        .map_err(ExportError::from_mongo)?;
    Ok(reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .cloned()
        .unwrap_or_default())
}

/// The metadata file's bytes.
pub fn render(collection: &str, info: &Document, indexes: Vec<Bson>) -> Vec<u8> {
    let mut meta = doc! { "indexes": indexes };
    let uuid = info.get_document("info").ok().and_then(|i| i.get("uuid"));
    if let Some(Bson::Binary(b)) = uuid
        && b.subtype == BinarySubtype::Uuid
    {
        meta.insert("uuid", super::archive::hex(&b.bytes));
    }
    meta.insert("collectionName", collection);
    meta.insert("type", info.get_str("type").unwrap_or("collection"));
    if let Ok(options) = info.get_document("options")
        && !options.is_empty()
    {
        meta.insert("options", options.clone());
    }
    let json = Bson::Document(meta).into_canonical_extjson();
    serde_json::to_vec(&json).expect("extended JSON serializes")
}
