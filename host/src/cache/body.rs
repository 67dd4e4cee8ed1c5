//! A cached body: a sequence of chunks that readers follow while the fill
//! is still appending to it.
//!
//! A fill that fails reaches every reader as an error, never as a clean end
//! of body (the failure mode of Pingora #932), so a client never takes a
//! truncated object for a whole one.

use std::sync::{Arc, OnceLock, RwLock};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use crate::http::BoxError;

/// How far the fill has got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    /// Chunks so far.
    Filling(usize),
    Complete,
    Failed(Arc<str>),
}

/// Bodies up to this size are copied into one buffer of their own when their
/// fill ends, so a hit is written with one `write` instead of one per origin
/// chunk.
const COMPACT_MAX: u64 = 4 * 1024 * 1024;

#[derive(Debug, Default)]
struct Chunks {
    /// Bumped when the list is replaced by its compacted form; readers
    /// then find their place again by byte offset.
    generation: u64,
    list: Vec<Bytes>,
}

/// A stored response's body: one buffer when the body was whole before
/// it was stored (most objects, see `fill`), else the shared body of a
/// fill that readers follow. The first needs no lock, chunk list or
/// channel, which would cost a small object more than its bytes.
#[derive(Debug, Clone)]
pub enum StoredBody {
    Whole(Bytes),
    Fill(Arc<SharedBody>),
}

impl StoredBody {
    /// A body that is already whole, in an owned copy for the reason
    /// `SharedBody::finish` gives.
    pub fn complete(bytes: Bytes) -> StoredBody {
        if bytes.len() as u64 <= COMPACT_MAX {
            StoredBody::Whole(Bytes::copy_from_slice(&bytes))
        } else {
            StoredBody::Whole(bytes)
        }
    }

    /// The complete body as one buffer, if it is complete and that small.
    pub fn whole(&self) -> Option<&Bytes> {
        match self {
            StoredBody::Whole(bytes) => Some(bytes),
            StoredBody::Fill(fill) => fill.whole(),
        }
    }

    /// Whether the fill has ended; a finished fill's one buffer tells
    /// without the progress channel's lock, which every hit on a popular
    /// object would share.
    pub fn is_complete(&self) -> bool {
        match self {
            StoredBody::Whole(_) => true,
            StoredBody::Fill(fill) => fill.whole().is_some() || fill.is_complete(),
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        match self {
            StoredBody::Whole(bytes) => bytes.len() as u64,
            StoredBody::Fill(fill) => fill.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunks covering bytes `start..end` of a complete body, sliced.
    pub fn slice(&self, start: u64, end: u64) -> Vec<Bytes> {
        match self {
            StoredBody::Whole(bytes) => {
                let len = bytes.len() as u64;
                let (from, to) = (start.min(len) as usize, end.min(len) as usize);
                if from < to {
                    vec![bytes.slice(from..to)]
                } else {
                    Vec::new()
                }
            }
            StoredBody::Fill(fill) => fill.slice(start, end),
        }
    }
}

#[derive(Debug)]
pub struct SharedBody {
    chunks: RwLock<Chunks>,
    /// The complete body in one buffer, once it is (bodies up to
    /// `COMPACT_MAX`): a hit reads it without the lock or the progress
    /// channel, which every hit on a popular object would otherwise share.
    whole: OnceLock<Bytes>,
    /// How far the fill has got, for readers that follow it.
    progress: watch::Sender<Progress>,
    /// The length the origin announced, if any.
    pub expected_len: Option<u64>,
}

/// Why a reader could not get the whole body.
#[derive(Debug, thiserror::Error)]
#[error("the cache fill failed: {0}")]
pub struct FillFailed(Arc<str>);

impl SharedBody {
    /// An empty body about to be filled.
    pub fn filling(expected_len: Option<u64>) -> Arc<SharedBody> {
        Arc::new(SharedBody {
            chunks: RwLock::new(Chunks::default()),
            whole: OnceLock::new(),
            progress: watch::Sender::new(Progress::Filling(0)),
            expected_len,
        })
    }

    /// Appends a chunk and wakes the readers.
    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let count = {
            let mut chunks = self.chunks.write().unwrap_or_else(|p| p.into_inner());
            chunks.list.push(chunk);
            chunks.list.len()
        };
        self.send(Progress::Filling(count));
    }

    pub fn finish(&self) {
        {
            let mut chunks = self.chunks.write().unwrap_or_else(|p| p.into_inner());
            let len: u64 = chunks.list.iter().map(|c| c.len() as u64).sum();
            // A single chunk is copied too: a chunk read from the origin is
            // a slice of the connection's read buffer and would keep all of
            // it alive for as long as the object is stored.
            if !chunks.list.is_empty() && len <= COMPACT_MAX {
                let mut all = BytesMut::with_capacity(len as usize);
                for c in &chunks.list {
                    all.extend_from_slice(c);
                }
                chunks.list = vec![all.freeze()];
                chunks.generation += 1;
            }
            match chunks.list.as_slice() {
                [] => drop(self.whole.set(Bytes::new())),
                [one] => drop(self.whole.set(one.clone())),
                _ => {}
            }
        }
        self.send(Progress::Complete);
    }

    pub fn fail(&self, reason: &str) {
        self.send(Progress::Failed(reason.into()));
    }

    fn send(&self, progress: Progress) {
        self.progress.send_replace(progress);
    }

    /// The complete body as one buffer, if it is complete and that small.
    pub fn whole(&self) -> Option<&Bytes> {
        self.whole.get()
    }

    pub fn is_complete(&self) -> bool {
        *self.progress.borrow() == Progress::Complete
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        if let Some(whole) = self.whole.get() {
            return whole.len() as u64;
        }
        self.chunks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .list
            .iter()
            .map(|c| c.len() as u64)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the entry costs the cache: the announced length while filling.
    pub fn weight(&self) -> u64 {
        self.expected_len.unwrap_or(0).max(self.len())
    }

    /// The chunks covering bytes `start..end` of a complete body, sliced.
    pub fn slice(&self, start: u64, end: u64) -> Vec<Bytes> {
        let chunks = self.chunks.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut offset = 0u64;
        for chunk in chunks.list.iter() {
            let len = chunk.len() as u64;
            let (lo, hi) = (offset, offset + len);
            offset = hi;
            if hi <= start || lo >= end {
                continue;
            }
            let from = start.saturating_sub(lo) as usize;
            let to = (end.min(hi) - lo) as usize;
            out.push(chunk.slice(from..to));
        }
        out
    }

    /// The whole body in one buffer (complete bodies only).
    pub fn to_bytes(&self) -> Bytes {
        let chunks = self.chunks.read().unwrap_or_else(|p| p.into_inner());
        match chunks.list.len() {
            0 => Bytes::new(),
            1 => chunks.list[0].clone(),
            _ => {
                let mut all = BytesMut::new();
                for c in chunks.list.iter() {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        }
    }

    /// A stream of the body from the start, following the fill.
    pub fn reader(
        self: &Arc<Self>,
    ) -> impl futures::Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
        let rx = self.progress.subscribe();
        let state = Some((self.clone(), rx, Cursor::default()));
        futures::stream::unfold(state, |state| async move {
            let (body, mut rx, mut cursor) = state?;
            loop {
                // Read the progress before the chunks: a push after this
                // point wakes `changed`, a push before it is seen below.
                let progress = rx.borrow_and_update().clone();
                let chunk = cursor.next(&body.chunks.read().unwrap_or_else(|p| p.into_inner()));
                if let Some(chunk) = chunk {
                    return Some((Ok(chunk), Some((body, rx, cursor))));
                }
                match progress {
                    Progress::Complete => return None,
                    Progress::Failed(reason) => {
                        let error: BoxError = Box::new(FillFailed(reason));
                        // One error, then the end of the stream.
                        return Some((Err(error), None));
                    }
                    Progress::Filling(_) => {
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        })
    }
}

/// A reader's place: the byte offset, plus where that offset was found in
/// the chunk list of a given generation.
#[derive(Debug, Default)]
struct Cursor {
    offset: u64,
    generation: u64,
    index: usize,
    index_start: u64,
}

impl Cursor {
    /// The bytes from the offset to the end of its chunk, if any yet.
    fn next(&mut self, chunks: &Chunks) -> Option<Bytes> {
        if chunks.generation != self.generation {
            // The list was compacted: find the offset again.
            self.generation = chunks.generation;
            self.index = 0;
            self.index_start = 0;
        }
        while let Some(chunk) = chunks.list.get(self.index) {
            let end = self.index_start + chunk.len() as u64;
            if self.offset < end {
                let piece = chunk.slice((self.offset - self.index_start) as usize..);
                self.offset = end;
                self.index_start = end;
                self.index += 1;
                return Some(piece);
            }
            self.index_start = end;
            self.index += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_reader_follows_the_fill_to_the_end() {
        let body = SharedBody::filling(Some(6));
        let reader = body.reader();
        body.push(Bytes::from_static(b"abc"));
        let filler = body.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            filler.push(Bytes::from_static(b"def"));
            filler.finish();
        });
        let all: Vec<Bytes> = reader.map(|r| r.unwrap()).collect().await;
        assert_eq!(all.concat(), b"abcdef");
    }

    #[tokio::test]
    async fn a_failed_fill_reaches_the_reader_as_an_error() {
        let body = SharedBody::filling(Some(6));
        body.push(Bytes::from_static(b"abc"));
        body.fail("origin reset");
        let items: Vec<_> = body.reader().collect().await;
        assert!(items[0].is_ok());
        assert!(items.iter().any(|i| i.is_err()));
    }

    #[tokio::test]
    async fn a_reader_keeps_its_place_when_the_body_is_compacted() {
        let body = SharedBody::filling(Some(6));
        body.push(Bytes::from_static(b"abc"));
        let mut reader = Box::pin(body.reader());
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        body.push(Bytes::from_static(b"def"));
        body.finish();
        let rest: Vec<Bytes> = reader.map(|r| r.unwrap()).collect().await;
        assert_eq!(rest.concat(), b"def");
        assert_eq!(body.slice(0, 6), vec![Bytes::from_static(b"abcdef")]);
    }

    #[test]
    fn slices_cross_chunk_boundaries() {
        let body = SharedBody::filling(None);
        body.push(Bytes::from_static(b"0123"));
        body.push(Bytes::from_static(b"4567"));
        assert_eq!(body.slice(2, 6).concat(), b"2345");
        body.finish();
        assert_eq!(body.slice(2, 6).concat(), b"2345");
        assert_eq!(body.slice(0, 8).concat(), b"01234567");
        assert_eq!(body.to_bytes(), Bytes::from_static(b"01234567"));
    }
}
