//! Length-prefixed postcard frames: `u32` big-endian length, then that many bytes.
//!
//! The length is checked against an explicit maximum *before* anything is allocated, so an
//! oversized or hostile length is a protocol error, never an allocation; below the maximum, the
//! buffer grows only as the body's bytes arrive.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side accepts or sends (16 MiB).
pub const MAX_FRAME: usize = 16 << 20;

/// How far ahead of the bytes received a frame's buffer is reserved while reading it.
const READ_AHEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("undecodable frame: {0}")]
    Decode(postcard::Error),
    #[error("unencodable message: {0}")]
    Encode(postcard::Error),
}

/// Encodes a message as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_FRAME,
        });
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame body; trailing bytes are an error, so one frame is exactly one message.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(postcard::Error::DeserializeBadEncoding));
    }
    Ok(msg)
}

/// Writes one message as a frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = encode(msg)?;
    w.write_all(&bytes).await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame<R, T>(r: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len_buf = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = r.read(&mut len_buf[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Grow the buffer as the bytes arrive instead of reserving the claimed length: a peer that
    // claims a large frame and sends nothing more would otherwise pin that memory for free.
    let mut body = Vec::with_capacity(len.min(READ_AHEAD));
    while body.len() < len {
        let start = body.len();
        body.resize(start + (len - start).min(READ_AHEAD), 0);
        let n = r.read(&mut body[start..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated);
        }
        body.truncate(start + n);
    }
    decode_body(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AgentMsg;

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &AgentMsg::KeepAlive).await.unwrap();
        write_frame(&mut buf, &AgentMsg::KeepAlive).await.unwrap();
        let mut r = buf.as_slice();
        for _ in 0..2 {
            let m: Option<AgentMsg> = read_frame(&mut r, MAX_FRAME).await.unwrap();
            assert_eq!(m, Some(AgentMsg::KeepAlive));
        }
        let end: Option<AgentMsg> = read_frame(&mut r, MAX_FRAME).await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_allocating() {
        let bytes = u32::MAX.to_be_bytes();
        let err = read_frame::<_, AgentMsg>(&mut bytes.as_slice(), MAX_FRAME)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    /// Hands out a length prefix claiming `claimed` bytes, then `then` bytes of body, then
    /// nothing more (pending forever, as a silent peer); records the largest buffer the reader
    /// offered, which is what it had reserved for the body.
    struct Stingy {
        bytes: Vec<u8>,
        at: usize,
        largest_offer: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for Stingy {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.largest_offer
                .fetch_max(buf.remaining(), std::sync::atomic::Ordering::SeqCst);
            if self.at == self.bytes.len() {
                return std::task::Poll::Pending;
            }
            let n = buf.remaining().min(self.bytes.len() - self.at).min(512);
            let at = self.at;
            buf.put_slice(&self.bytes[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_claimed_length_is_not_reserved_before_the_bytes_arrive() {
        let claimed = MAX_FRAME;
        let mut bytes = (claimed as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 3000]);
        let largest_offer = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut peer = Stingy {
            bytes,
            at: 0,
            largest_offer: largest_offer.clone(),
        };
        let read = read_frame::<_, AgentMsg>(&mut peer, MAX_FRAME);
        let stalled = tokio::time::timeout(std::time::Duration::from_millis(100), read).await;
        assert!(
            stalled.is_err(),
            "the frame cannot be complete: {stalled:?}"
        );
        let offered = largest_offer.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            offered <= 64 * 1024,
            "{offered} bytes reserved for a frame that claims {claimed} and sent 3000"
        );
    }

    #[tokio::test]
    async fn truncated_and_malformed_frames_are_errors() {
        let full = encode(&AgentMsg::ResyncRequest {
            reason: "gap".into(),
        })
        .unwrap();
        for cut in [1, 3, 5, full.len() - 1] {
            let err = read_frame::<_, AgentMsg>(&mut &full[..cut], MAX_FRAME)
                .await
                .unwrap_err();
            assert!(matches!(err, FrameError::Truncated), "cut {cut}: {err}");
        }
        let garbage = [0, 0, 0, 2, 0xff, 0xff];
        let err = read_frame::<_, AgentMsg>(&mut garbage.as_slice(), MAX_FRAME)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }
}
