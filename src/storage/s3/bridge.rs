//! The synchronous face of the asynchronous S3 client: every request runs on one small
//! tokio runtime of its own, and the calling thread waits on a channel for the answer.
//!
//! Why not opendal's `blocking::Operator`: it runs futures with `Handle::block_on` on a
//! runtime handle taken at construction, which panics when called from a thread that is
//! driving a runtime, and needs a runtime entered where the target is built. Here, the
//! caller may be a plain thread, a thread of tokio's blocking pool (`spawn_blocking`),
//! or even, by mistake, a runtime worker (which then only waits, and cannot deadlock:
//! the work runs elsewhere). The runtime lives in a static, so it is never dropped
//! inside an asynchronous context (which would panic) and all S3 targets share its
//! connection pool.

use std::future::Future;
use std::io::{self, Read};
use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;

use bytes::{Buf, Bytes};
use futures_util::{FutureExt, Stream, StreamExt};

/// Two workers: uploads run two parts at once, and the waiting is done elsewhere.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dcb-s3")
        .enable_all()
        .build()
        .expect("cannot start the S3 client's runtime")
});

/// Run `f` on the S3 runtime and wait for its result. A panic in `f` resumes here.
pub fn block<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    RUNTIME.spawn(async move {
        let _ = tx.send(AssertUnwindSafe(f).catch_unwind().await);
    });
    match rx.recv() {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the S3 client's runtime stopped"),
    }
}

/// A stream of byte chunks read as a [`Read`]: one chunk is held at a time, so an
/// object of any size is read in bounded memory.
pub struct StreamReader<S> {
    stream: Option<S>,
    chunk: Bytes,
}

impl<S> StreamReader<S>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
{
    pub fn new(stream: S) -> Self {
        StreamReader {
            stream: Some(stream),
            chunk: Bytes::new(),
        }
    }
}

impl<S> Read for StreamReader<S>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            let Some(mut stream) = self.stream.take() else {
                return Ok(0);
            };
            let (stream, next) = block(async move {
                let next = stream.next().await;
                (stream, next)
            });
            match next {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.stream = Some(stream);
                }
                Some(Err(e)) => {
                    self.stream = Some(stream);
                    return Err(e);
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Work answers a plain thread, the blocking pool and a runtime worker; panics return.
    #[test]
    fn answers_from_any_thread() {
        assert_eq!(block(async { 1 + 1 }), 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let from_pool =
            rt.block_on(async { tokio::task::spawn_blocking(|| block(async { 3 })).await });
        assert_eq!(from_pool.unwrap(), 3);
        let from_worker = rt.block_on(async { block(async { 4 }) });
        assert_eq!(from_worker, 4);
        let panicked = std::panic::catch_unwind(|| block(async { panic!("inside") }));
        assert!(panicked.is_err());
    }

    // Chunks are read across reads of any size, errors surface, the end is 0.
    #[test]
    fn reads_chunks() {
        let chunks: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"world")),
        ];
        let mut r = StreamReader::new(futures_util::stream::iter(chunks));
        let mut out = Vec::new();
        let mut small = [0u8; 4];
        loop {
            let n = r.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&small[..n]);
        }
        assert_eq!(out, b"hello world");
        let failing: Vec<io::Result<Bytes>> = vec![Err(io::Error::other("reset"))];
        let mut r = StreamReader::new(futures_util::stream::iter(failing));
        assert_eq!(r.read(&mut small).unwrap_err().to_string(), "reset");
    }
}
