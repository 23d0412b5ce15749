//! The little of ZMTP 3.0 (the ZeroMQ wire protocol, rfc.zeromq.org
//! spec 23) the event plane speaks: a SUB socket on a worker's PUB, and a
//! DEALER on its replay ROUTER, over TCP with the NULL mechanism, one
//! connection each. Its own rather than a ZMQ library's because a peer's
//! frame header names the size of what follows, and the libraries
//! (the `zeromq` crate's decoder, as libzmq without `ZMQ_MAXMSGSIZE`)
//! allocate what it names: one bad or hostile publisher could make every
//! router replica reserve terabytes and abort. Here a message is at most
//! [`MAX_MESSAGE_BYTES`] in [`MAX_MESSAGE_FRAMES`] frames; a larger one is
//! read through without being kept, and reported as [`Received::Oversized`].
//!
//! The greeting, the READY handshake and the message-form subscription
//! (`\x01` + topic) are what the `zeromq` crate sends, which libzmq
//! publishers (SGLang's and vLLM's, through pyzmq) accept.

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The largest message kept, all frames together: a KV event batch is
/// kilobytes to a few megabytes.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The most frames a message kept may have (an event message has three).
pub const MAX_MESSAGE_FRAMES: usize = 16;

/// How long reaching a peer and the handshake may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Frame flags.
const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum ZmtpError {
    /// The endpoint is not `tcp://HOST:PORT`.
    #[error("{0:?} is not a tcp://HOST:PORT endpoint")]
    Endpoint(String),
    /// Reading or writing failed, or the peer closed the connection.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer did not answer within [`CONNECT_TIMEOUT`].
    #[error("no ZMTP handshake within {CONNECT_TIMEOUT:?}")]
    Timeout,
    /// The peer does not speak ZMTP 3 with the NULL mechanism.
    #[error("not a ZMTP 3 peer with the NULL mechanism: {0}")]
    Handshake(&'static str),
}

/// What [`Connection::recv`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A message: its frames, in order.
    Message(Vec<Bytes>),
    /// A message past [`MAX_MESSAGE_BYTES`] or [`MAX_MESSAGE_FRAMES`], read
    /// and dropped: its size in bytes.
    Oversized(u64),
}

/// One ZMTP connection.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// Our greeting: signature, version 3.0, mechanism NULL, not a server.
fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// A READY command saying we are a `socket_type` socket.
fn ready(socket_type: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    body.push(5);
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type.as_bytes());
    let mut frame = vec![COMMAND, body.len() as u8];
    frame.extend_from_slice(&body);
    frame
}

/// `tcp://HOST:PORT` as `HOST:PORT`.
fn address(endpoint: &str) -> Result<&str, ZmtpError> {
    endpoint
        .strip_prefix("tcp://")
        .filter(|a| {
            a.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        })
        .ok_or_else(|| ZmtpError::Endpoint(endpoint.to_string()))
}

impl Connection {
    /// Connect to `endpoint` as a `socket_type` socket (`SUB`, `DEALER`)
    /// and complete the handshake: greetings, then READY both ways.
    pub async fn connect(endpoint: &str, socket_type: &str) -> Result<Connection, ZmtpError> {
        let address = address(endpoint)?;
        let handshake = async {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let (reader, writer) = stream.into_split();
            let mut c = Connection {
                reader: BufReader::new(reader),
                writer,
            };
            c.writer.write_all(&greeting()).await?;
            let mut theirs = [0u8; 64];
            c.reader.read_exact(&mut theirs).await?;
            if theirs[0] != 0xff || theirs[9] & 0x01 != 0x01 {
                return Err(ZmtpError::Handshake("no ZMTP signature"));
            }
            if theirs[10] < 3 {
                return Err(ZmtpError::Handshake("a version before 3"));
            }
            if &theirs[12..16] != b"NULL" || theirs[16..32].iter().any(|&b| b != 0) {
                return Err(ZmtpError::Handshake("another security mechanism"));
            }
            c.writer.write_all(&ready(socket_type)).await?;
            let (flags, body) = c.frame(4096).await?;
            match body {
                Some(body) if flags & COMMAND != 0 && body.starts_with(b"\x05READY") => Ok(c),
                _ => Err(ZmtpError::Handshake("no READY command")),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| ZmtpError::Timeout)?
    }

    /// Subscribe (a SUB socket) to messages whose first frame starts with
    /// `topic` ("" for all).
    pub async fn subscribe(&mut self, topic: &[u8]) -> Result<(), ZmtpError> {
        let mut body = Vec::with_capacity(topic.len() + 1);
        body.push(1);
        body.extend_from_slice(topic);
        self.send(&[&body]).await
    }

    /// Send a message of `frames`.
    pub async fn send(&mut self, frames: &[&[u8]]) -> Result<(), ZmtpError> {
        let mut out = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let more = if i + 1 < frames.len() { MORE } else { 0 };
            match u8::try_from(frame.len()) {
                Ok(len) => out.extend_from_slice(&[more, len]),
                Err(_) => {
                    out.push(more | LONG);
                    out.extend_from_slice(&(frame.len() as u64).to_be_bytes());
                }
            }
            out.extend_from_slice(frame);
        }
        self.writer.write_all(&out).await?;
        Ok(())
    }

    /// The next message (commands in between are skipped).
    pub async fn recv(&mut self) -> Result<Received, ZmtpError> {
        loop {
            let mut frames = Vec::new();
            let mut kept = 0usize;
            let mut size = 0u64;
            let mut oversized = false;
            loop {
                // Past either bound nothing more is kept, empty frames
                // included: they would still grow the list.
                let keep = !oversized && frames.len() < MAX_MESSAGE_FRAMES;
                let budget = if keep { MAX_MESSAGE_BYTES - kept } else { 0 };
                let (flags, body, len) = self.frame_sized(budget).await?;
                if flags & COMMAND != 0 {
                    // PING and the like, between messages: not ours to keep.
                    break;
                }
                size += len;
                match body {
                    Some(body) if keep => {
                        kept += body.len();
                        frames.push(body);
                    }
                    _ => oversized = true,
                }
                if flags & MORE == 0 {
                    return Ok(if oversized {
                        Received::Oversized(size)
                    } else {
                        Received::Message(frames)
                    });
                }
            }
        }
    }

    /// One frame: its flags and body, the body `None` (read and dropped)
    /// when longer than `max`.
    async fn frame(&mut self, max: usize) -> Result<(u8, Option<Bytes>), ZmtpError> {
        let (flags, body, _) = self.frame_sized(max).await?;
        Ok((flags, body))
    }

    /// [`Connection::frame`], with the body's length.
    async fn frame_sized(&mut self, max: usize) -> Result<(u8, Option<Bytes>, u64), ZmtpError> {
        let flags = self.reader.read_u8().await?;
        let len = if flags & LONG != 0 {
            self.reader.read_u64().await?
        } else {
            u64::from(self.reader.read_u8().await?)
        };
        if usize::try_from(len).is_ok_and(|n| n <= max) {
            let mut body = vec![0u8; len as usize];
            self.reader.read_exact(&mut body).await?;
            return Ok((flags, Some(body.into()), len));
        }
        let skipped =
            tokio::io::copy(&mut (&mut self.reader).take(len), &mut tokio::io::sink()).await?;
        if skipped < len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok((flags, None, len))
    }
}

#[cfg(test)]
mod tests;
