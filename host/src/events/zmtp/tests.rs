use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use zeromq::{Socket, SocketSend};

use super::*;

/// A peer that completes the handshake as a PUB, writes `then` and hangs
/// up.
async fn raw_publisher(then: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(&greeting()).await.unwrap();
        let mut theirs = [0u8; 64];
        stream.read_exact(&mut theirs).await.unwrap();
        stream.write_all(&ready("PUB")).await.unwrap();
        // Read the subscriber's READY: data left unread would make the
        // hang-up a reset, which can overtake what was written.
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.unwrap();
        let mut body = vec![0u8; usize::from(head[1])];
        stream.read_exact(&mut body).await.unwrap();
        assert!(body.starts_with(b"\x05READY"), "{body:?}");
        stream.write_all(&then).await.unwrap();
    });
    endpoint
}

/// A message frame header: flags and length, long form when needed.
fn header(more: bool, len: u64) -> Vec<u8> {
    let flags = if more { MORE } else { 0 };
    match u8::try_from(len) {
        Ok(short) => vec![flags, short],
        Err(_) => {
            let mut h = vec![flags | LONG];
            h.extend_from_slice(&len.to_be_bytes());
            h
        }
    }
}

#[tokio::test]
async fn a_zeromq_publisher_is_followed() {
    let mut publisher = zeromq::PubSocket::new();
    let bound = publisher.bind("tcp://127.0.0.1:0").await.unwrap();
    let mut sub = Connection::connect(&bound.to_string(), "SUB")
        .await
        .unwrap();
    sub.subscribe(b"").await.unwrap();
    let long = Bytes::from(vec![7u8; 300]);
    let mut message = zeromq::ZmqMessage::from(Bytes::from_static(b"topic"));
    message.push_back(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1]));
    message.push_back(long.clone());
    // The publisher learns of the subscription a moment after it is sent.
    let received = loop {
        publisher.send(message.clone()).await.unwrap();
        match tokio::time::timeout(std::time::Duration::from_millis(50), sub.recv()).await {
            Ok(received) => break received.unwrap(),
            Err(_) => continue,
        }
    };
    assert_eq!(
        received,
        Received::Message(vec![
            Bytes::from_static(b"topic"),
            Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1]),
            long
        ])
    );
}

/// Past the bound a message is read through and dropped, and the next one
/// still arrives: the connection stays in step.
#[tokio::test]
async fn an_oversized_message_is_dropped_and_the_next_arrives() {
    let big = MAX_MESSAGE_BYTES as u64 - 2;
    let mut stream = header(true, 2);
    stream.extend_from_slice(b"t1");
    stream.extend(header(false, big + 1));
    stream.extend(std::iter::repeat_n(0u8, big as usize + 1));
    stream.extend(header(false, 2));
    stream.extend_from_slice(b"ok");
    let mut sub = Connection::connect(&raw_publisher(stream).await, "SUB")
        .await
        .unwrap();
    assert_eq!(sub.recv().await.unwrap(), Received::Oversized(big + 3));
    assert_eq!(
        sub.recv().await.unwrap(),
        Received::Message(vec![Bytes::from_static(b"ok")])
    );
}

/// Frames past the bound are dropped, empty ones too (a stream of empty
/// frames would otherwise grow the list without end).
#[tokio::test]
async fn too_many_frames_are_dropped_too() {
    let mut stream = Vec::new();
    for _ in 0..MAX_MESSAGE_FRAMES {
        stream.extend(header(true, 1));
        stream.push(b'x');
    }
    for last in [false, false, true] {
        stream.extend(header(!last, 0));
    }
    let mut sub = Connection::connect(&raw_publisher(stream).await, "SUB")
        .await
        .unwrap();
    assert_eq!(
        sub.recv().await.unwrap(),
        Received::Oversized(MAX_MESSAGE_FRAMES as u64)
    );
}

/// A header naming more bytes than memory holds allocates nothing: the
/// connection ends when the peer does (a decoder that reserved what the
/// header says would abort the process here).
#[tokio::test]
async fn a_hostile_frame_length_allocates_nothing() {
    let mut sub = Connection::connect(&raw_publisher(header(false, 1 << 62)).await, "SUB")
        .await
        .unwrap();
    let err = sub.recv().await.unwrap_err();
    assert!(matches!(err, ZmtpError::Io(_)), "the peer hung up: {err}");
}

#[tokio::test]
async fn peers_that_are_not_zmtp_and_bad_endpoints_are_named() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream
            .write_all(&[b"HTTP/1.1 400 Bad Request\r\n\r\n".as_slice(), &[0; 64]].concat())
            .await
            .unwrap();
    });
    let err = Connection::connect(&endpoint, "SUB").await.unwrap_err();
    assert!(matches!(err, ZmtpError::Handshake(_)), "{err}");
    for bad in ["ipc:///tmp/x", "tcp://host", "tcp://host:port"] {
        let err = Connection::connect(bad, "SUB").await.unwrap_err();
        assert!(matches!(err, ZmtpError::Endpoint(_)), "{bad}: {err}");
    }
}
