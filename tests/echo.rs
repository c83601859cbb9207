//! The `echo` guest moves bulk data through the host's receive path (a
//! first chunk through a host buffer, the rest straight into guest memory)
//! and send path (straight from guest memory): every byte must come back,
//! in order, whatever the chunking, and quotas must cut at the exact byte.

use crate::support::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// Bytes that are not periodic in any buffer size the host uses, so a chunk
/// lost, doubled or reordered shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn netcat_gets_every_byte_back_in_order() {
    let host = Host::serve("echo", &[]);
    let data = pattern(3 * 1024 * 1024 + 123);
    let mut nc = Command::new("nc")
        .args(["-N", "-w", "20", "127.0.0.1", &host.addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run nc (Debian package netcat-openbsd; .ci/run installs it)");
    let mut stdin = nc.stdin.take().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&sent).unwrap());
    let out = nc.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.stdout.len(), data.len(), "echoed length");
    assert!(out.stdout == data, "echoed bytes differ from those sent");
}

#[test]
fn odd_sized_writes_come_back_intact() {
    let host = Host::serve("echo", &[]);
    let data = pattern(700_001);
    let mut stream = connect(host.addr);
    let mut reader = stream.try_clone().unwrap();
    let expected = data.len();
    let collector = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(expected);
        reader.read_to_end(&mut got).unwrap();
        got
    });
    // Sizes around the host's 4 KiB first read and 64 KiB recv cap.
    let sizes = [1, 4095, 4096, 4097, 65535, 65536, 65537, 100_000, 7];
    let mut offset = 0;
    for size in sizes.iter().cycle() {
        if offset == data.len() {
            break;
        }
        let end = (offset + size).min(data.len());
        stream.write_all(&data[offset..end]).unwrap();
        offset = end;
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let got = collector.join().unwrap();
    assert_eq!(got.len(), data.len(), "echoed length");
    assert!(got == data, "echoed bytes differ from those sent");
}

#[test]
fn bytes_in_quota_passes_exactly_the_quota_of_bulk_data() {
    const QUOTA: usize = 100_001;
    let host = Host::serve("echo", &["--max-bytes-in", "100001"]);
    let data = pattern(QUOTA);

    // Exactly the quota, in bulk: every byte comes back.
    let mut stream = connect(host.addr);
    let mut reader = stream.try_clone().unwrap();
    let collector = std::thread::spawn(move || read_to_end(&mut reader));
    stream.write_all(&data).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let got = collector.join().unwrap();
    assert_eq!(got.len(), QUOTA, "the whole quota is received and echoed");
    assert!(got == data, "the echoed bytes differ from those sent");

    // Past the quota: the guest is refused further bytes and the host closes
    // the connection. The close discards what the peer sent past the quota,
    // so the kernel resets it and may drop echoed bytes still in flight:
    // what comes back is a prefix of what was sent, never more than the
    // quota.
    let data = pattern(1_000_000);
    let mut stream = connect(host.addr);
    let mut reader = stream.try_clone().unwrap();
    let collector = std::thread::spawn(move || read_to_end(&mut reader));
    let _ = stream.write_all(&data);
    let got = collector.join().unwrap();
    assert!(got.len() <= QUOTA, "{} bytes echoed past a quota of {QUOTA}", got.len());
    assert!(got[..] == data[..got.len()], "the echoed prefix differs from what was sent");
    host.wait_for_log("the quota warning", |l| l.contains("--max-bytes-in 100001 received"));
}
