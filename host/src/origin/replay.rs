//! A small request body read whole before it is sent, so that when a
//! member cannot be reached the request goes to the next one with the same
//! body (nginx keeps bodies up to `client_body_buffer_size` for
//! `proxy_next_upstream` the same way). A larger body, or one with
//! trailers, streams as it comes and is never sent twice.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, BodyStream, StreamBody};

use crate::http::{BoxError, ProxyBody};

/// A request body, ready to send.
pub(super) enum Prepared {
    /// Read whole: can be sent again.
    Whole(Bytes),
    /// Streaming (what was read first, then the rest): sent once.
    Stream(ProxyBody),
}

/// Reads `body` whole if it ends within `limit` bytes (0: never reads
/// ahead). A failure of the client's body (too large, stalled, broken) is
/// the error.
pub(super) async fn prepare(mut body: ProxyBody, limit: u64) -> Result<Prepared, BoxError> {
    if body.is_end_stream() {
        return Ok(Prepared::Whole(Bytes::new()));
    }
    if limit == 0 || body.size_hint().lower() > limit {
        return Ok(Prepared::Stream(body));
    }
    let mut frames: Vec<Frame<Bytes>> = Vec::new();
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let trailers = !frame.is_data();
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
        frames.push(frame);
        if read > limit || trailers {
            let head = futures::stream::iter(frames.into_iter().map(Ok));
            let rest = BodyStream::new(body);
            return Ok(Prepared::Stream(
                StreamBody::new(head.chain(rest)).boxed_unsync(),
            ));
        }
    }
    let mut whole = BytesMut::with_capacity(read as usize);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    Ok(Prepared::Whole(whole.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&'static [u8]]) -> ProxyBody {
        let frames = parts
            .iter()
            .map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p))))
            .collect::<Vec<_>>();
        StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
    }

    async fn collected(body: ProxyBody) -> Bytes {
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_small_body_is_kept_whole_and_a_large_one_streams_unchanged() {
        match prepare(chunked(&[b"ab", b"cd"]), 4).await.unwrap() {
            Prepared::Whole(b) => assert_eq!(&b[..], b"abcd"),
            Prepared::Stream(_) => panic!("4 bytes fit a limit of 4"),
        }
        match prepare(chunked(&[b"ab", b"cd", b"ef"]), 4).await.unwrap() {
            Prepared::Stream(body) => assert_eq!(&collected(body).await[..], b"abcdef"),
            Prepared::Whole(_) => panic!("6 bytes over a limit of 4"),
        }
        match prepare(chunked(&[b"ab"]), 0).await.unwrap() {
            Prepared::Stream(body) => assert_eq!(&collected(body).await[..], b"ab"),
            Prepared::Whole(_) => panic!("a limit of 0 reads nothing ahead"),
        }
        let failing = StreamBody::new(futures::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err::<Frame<Bytes>, BoxError>("client went away".into()),
        ]))
        .boxed_unsync();
        assert!(prepare(failing, 64).await.is_err());
    }
}
