//! Connections as `std::io` streams.

use crate::error::recv_error;
use crate::{ErrorCode, HostConnection};
use std::fmt;
use std::io::{self, BufRead, Read, Write};

/// What a [`Connection`] moves its bytes through: in a guest the host's
/// connection resource ([`HostConnection`]), in native tests a
/// [`MemoryTransport`](crate::testing::MemoryTransport). The methods are
/// those of the WIT resource `connection`.
pub trait Transport {
    /// Sends all of `data`, or fails (some prefix may have been sent).
    fn send(&self, data: &[u8]) -> Result<(), ErrorCode>;
    /// Between 1 and `max` bytes (the host returns at most 65536 whatever is
    /// asked), waiting for the first; empty at end of stream.
    fn recv(&self, max: u32) -> Result<Vec<u8>, ErrorCode>;
    /// Closes the write side: the peer reads end of stream.
    fn shutdown(&self) -> Result<(), ErrorCode>;
    /// The peer as `ip:port` (IPv6 as `[ip]:port`).
    fn peer_address(&self) -> String;
    /// This side as `ip:port` (IPv6 as `[ip]:port`).
    fn local_address(&self) -> String;
    /// Relays bytes both ways between this connection and `other` until
    /// both directions end, each end passed on as a write shutdown of the
    /// other side (the WIT `splice`). The host's connection relays both
    /// ways at once, inside the host. This default copies one way at a time
    /// with `recv` and `send` (this side's bytes to `other` to their end,
    /// then `other`'s back), which suits a scripted peer whose input is all
    /// known up front, as in native tests.
    fn splice(&self, other: &Self) -> RawSpliced
    where
        Self: Sized,
    {
        fn copy<T: Transport>(src: &T, dst: &T, moved: &mut u64) -> Result<(), ErrorCode> {
            loop {
                let data = src.recv(DEFAULT_RECV_SIZE)?;
                if data.is_empty() {
                    return dst.shutdown();
                }
                dst.send(&data)?;
                *moved += data.len() as u64;
            }
        }
        let (mut a_to_b, mut b_to_a) = (0, 0);
        let ended = copy(self, other, &mut a_to_b).and_then(|()| copy(other, self, &mut b_to_a));
        RawSpliced { a_to_b, b_to_a, ended }
    }
}

/// What the WIT `splice` returns: the bytes each way and how it ended.
pub type RawSpliced = crate::bindings::server::netplug::protocol::types::Spliced;

impl Transport for HostConnection {
    fn send(&self, data: &[u8]) -> Result<(), ErrorCode> {
        HostConnection::send(self, data)
    }
    fn recv(&self, max: u32) -> Result<Vec<u8>, ErrorCode> {
        HostConnection::recv(self, max)
    }
    fn shutdown(&self) -> Result<(), ErrorCode> {
        HostConnection::shutdown(self)
    }
    fn peer_address(&self) -> String {
        HostConnection::peer_address(self)
    }
    fn local_address(&self) -> String {
        HostConnection::local_address(self)
    }
    fn splice(&self, other: &Self) -> RawSpliced {
        crate::bindings::server::netplug::protocol::types::splice(self, other)
    }
}

/// What [`Connection::splice`] moved each way, and how it ended.
#[derive(Debug)]
pub struct Spliced {
    /// Bytes received from the connection `splice` was called on and sent
    /// to the other.
    pub a_to_b: u64,
    /// Bytes received from the other connection and sent to this one.
    pub b_to_a: u64,
    /// `Ok` once both directions reached end of stream; otherwise the error
    /// that ended it, on either connection (an `io::Error` with the host's
    /// code, as [`error_code`](crate::error_code) recovers).
    pub ended: io::Result<()>,
}

/// How many bytes a [`Connection`] asks for per `recv` unless told
/// otherwise ([`Connection::set_recv_size`]): the host's own cap per call.
pub const DEFAULT_RECV_SIZE: u32 = 64 * 1024;

/// One TCP connection, as `std::io` traits: [`Read`], [`BufRead`] and
/// [`Write`] (with `&mut`), so `BufReader`-style code, `read_line`,
/// `write_all` and `io::copy` work on it.
///
/// - Reading is buffered by the host's own `recv`: [`fill_buf`] hands out
///   the bytes one `recv` returned, without copying them again, and
///   [`consume`] moves on; the next `recv` happens when they are all
///   consumed. [`Read::read`] copies out of that buffer.
/// - [`write`](Write::write) sends the whole slice (the host's `send` is all
///   or nothing), so `write_all` is one host call; `flush` does nothing.
/// - [`halves`](Connection::halves) gives a reading half and a writing half
///   used at the same time, as an echo needs: send the slice `fill_buf`
///   lent, then consume it.
///
/// Dropping it closes the socket (the host closes it anyway when the
/// handler returns). Errors are `io::Error`s whose kind follows the host's
/// [`ErrorCode`] ([`error_code`](crate::error_code) recovers the code).
/// Once a `send` or `recv` has failed, every later one fails at once with
/// the same code.
///
/// The type parameter is the [`Transport`]: the host's connection in a
/// guest (the default), or a [`MemoryTransport`](crate::testing) in tests,
/// so protocol code written over `Connection<T>` (or over `impl BufRead +
/// Write`) runs unchanged in both.
///
/// [`fill_buf`]: BufRead::fill_buf
/// [`consume`]: BufRead::consume
pub struct Connection<T: Transport = HostConnection> {
    transport: T,
    rx: RecvBuf,
}

/// The bytes of the last `recv` and how far they are consumed.
struct RecvBuf {
    buf: Vec<u8>,
    pos: usize,
    size: u32,
}

impl RecvBuf {
    fn fill<T: Transport>(&mut self, transport: &T) -> io::Result<&[u8]> {
        if self.pos >= self.buf.len() {
            // The list the host returned becomes the buffer as it is.
            self.buf = transport.recv(self.size).map_err(recv_error)?;
            self.pos = 0;
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// The bytes received and not consumed, leaving the buffer empty.
    fn take_buffered(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.drain(..self.pos.min(buf.len()));
        self.pos = 0;
        buf
    }

    fn read<T: Transport>(&mut self, transport: &T, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let data = self.fill(transport)?;
        let n = data.len().min(out.len());
        out[..n].copy_from_slice(&data[..n]);
        self.consume(n);
        Ok(n)
    }

    /// At most `max` bytes: those still buffered, else one `recv`'s.
    fn recv<T: Transport>(&mut self, transport: &T, max: u32) -> io::Result<Vec<u8>> {
        let max = max as usize;
        if self.pos >= self.buf.len() {
            return transport.recv(max as u32).map_err(recv_error);
        }
        let rest = self.buf.len() - self.pos;
        if self.pos == 0 && rest <= max {
            // The whole buffer: hand the list over rather than copy it.
            return Ok(std::mem::take(&mut self.buf));
        }
        let n = rest.min(max);
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.consume(n);
        Ok(out)
    }
}

impl<T: Transport> Connection<T> {
    /// Wraps a transport, with nothing buffered.
    pub fn new(transport: T) -> Self {
        Connection { transport, rx: RecvBuf { buf: Vec::new(), pos: 0, size: DEFAULT_RECV_SIZE } }
    }

    /// Sets how many bytes each buffered read asks the host for (at least
    /// 1; the host returns at most 65536, and what has arrived, whatever is
    /// asked). The default is [`DEFAULT_RECV_SIZE`].
    pub fn set_recv_size(&mut self, size: u32) {
        self.rx.size = size.max(1);
    }

    /// Sends all of `data` (the WIT `send`).
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        Ok(self.transport.send(data)?)
    }

    /// At most `max` bytes, waiting for at least one; empty at end of
    /// stream (the WIT `recv`). Bytes already buffered by [`BufRead`] come
    /// first, so the two can be mixed without losing order.
    pub fn recv(&mut self, max: u32) -> io::Result<Vec<u8>> {
        self.rx.recv(&self.transport, max)
    }

    /// Shuts down the write side: the peer reads end of stream, while this
    /// side may still read.
    pub fn shutdown(&self) -> io::Result<()> {
        Ok(self.transport.shutdown()?)
    }

    /// The peer's address, as `std::net::TcpStream::peer_addr` gives it.
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        parse_address(&self.transport.peer_address())
    }

    /// This side's address, like [`peer_addr`](Self::peer_addr).
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        parse_address(&self.transport.local_address())
    }

    /// The peer's address as the host wrote it, `ip:port` (IPv6 as
    /// `[ip]:port`): what a log line needs, without parsing it.
    pub fn peer_address(&self) -> String {
        self.transport.peer_address()
    }

    /// This side's address as the host wrote it, like
    /// [`peer_address`](Self::peer_address).
    pub fn local_address(&self) -> String {
        self.transport.local_address()
    }

    /// A reading half and a writing half, to use at the same time (send
    /// what `fill_buf` lent before consuming it, say).
    pub fn halves(&mut self) -> (ReadHalf<'_, T>, WriteHalf<'_, T>) {
        (ReadHalf { transport: &self.transport, rx: &mut self.rx }, WriteHalf { transport: &self.transport })
    }

    /// Relays bytes both ways between this connection and `other` until
    /// both directions have ended, without passing them through the guest
    /// (the WIT `splice`): what a proxy does with bytes it does not need to
    /// inspect. When one side ends its stream, the other's write side is
    /// shut down and the opposite direction goes on to its own end. Bytes
    /// already buffered by [`BufRead`] on either side are sent on first.
    ///
    /// The host's limits apply as to `recv` and `send` (byte quotas, the
    /// idle timeout, counted only while neither direction moves, the
    /// lifetime); its time is not charged as CPU.
    pub fn splice(&mut self, other: &mut Connection<T>) -> Spliced {
        let (a_to_b, b_to_a) = (self.rx.take_buffered(), other.rx.take_buffered());
        let mut sent = [0u64; 2];
        for (i, (data, dst)) in [(&a_to_b, &other.transport), (&b_to_a, &self.transport)].into_iter().enumerate() {
            if data.is_empty() {
                continue;
            }
            if let Err(code) = dst.send(data) {
                return Spliced { a_to_b: sent[0], b_to_a: sent[1], ended: Err(code.into()) };
            }
            sent[i] = data.len() as u64;
        }
        let raw = self.transport.splice(&other.transport);
        Spliced {
            a_to_b: sent[0] + raw.a_to_b,
            b_to_a: sent[1] + raw.b_to_a,
            ended: raw.ended.map_err(io::Error::from),
        }
    }

    /// The transport (in tests: what was sent).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, dropping whatever was buffered and not consumed.
    pub fn into_transport(self) -> T {
        self.transport
    }
}

impl<T: Transport> Read for Connection<T> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.rx.read(&self.transport, out)
    }
}

impl<T: Transport> BufRead for Connection<T> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.rx.fill(&self.transport)
    }
    fn consume(&mut self, n: usize) {
        self.rx.consume(n)
    }
}

impl<T: Transport> Write for Connection<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        send_all(&self.transport, data)
    }
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        send_all(&self.transport, data).map(drop)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn send_all<T: Transport>(transport: &T, data: &[u8]) -> io::Result<usize> {
    if !data.is_empty() {
        transport.send(data)?;
    }
    Ok(data.len())
}

impl<T: Transport> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("buffered", &(self.rx.buf.len() - self.rx.pos)).finish_non_exhaustive()
    }
}

/// The reading half of a [`Connection::halves`]: [`Read`] and [`BufRead`]
/// over the connection's buffer.
pub struct ReadHalf<'a, T: Transport = HostConnection> {
    transport: &'a T,
    rx: &'a mut RecvBuf,
}

impl<T: Transport> ReadHalf<'_, T> {
    /// As [`Connection::recv`].
    pub fn recv(&mut self, max: u32) -> io::Result<Vec<u8>> {
        self.rx.recv(self.transport, max)
    }
}

impl<T: Transport> Read for ReadHalf<'_, T> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.rx.read(self.transport, out)
    }
}

impl<T: Transport> BufRead for ReadHalf<'_, T> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.rx.fill(self.transport)
    }
    fn consume(&mut self, n: usize) {
        self.rx.consume(n)
    }
}

/// The writing half of a [`Connection::halves`]: [`Write`], and
/// [`shutdown`](Self::shutdown).
pub struct WriteHalf<'a, T: Transport = HostConnection> {
    transport: &'a T,
}

impl<T: Transport> Clone for WriteHalf<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Transport> Copy for WriteHalf<'_, T> {}

impl<T: Transport> WriteHalf<'_, T> {
    /// As [`Connection::send`].
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        Ok(self.transport.send(data)?)
    }

    /// As [`Connection::shutdown`].
    pub fn shutdown(&self) -> io::Result<()> {
        Ok(self.transport.shutdown()?)
    }
}

impl<T: Transport> Write for WriteHalf<'_, T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        send_all(self.transport, data)
    }
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        send_all(self.transport, data).map(drop)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An address the host wrote, as a `SocketAddr`.
fn parse_address(text: &str) -> std::io::Result<std::net::SocketAddr> {
    text.parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an address: `{text}`")))
}
