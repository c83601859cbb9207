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
}

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

    /// The peer's address, as the host gives it: `ip:port` (IPv6 as
    /// `[ip]:port`), which `str::parse::<SocketAddr>` accepts.
    pub fn peer_addr(&self) -> String {
        self.transport.peer_address()
    }

    /// This side's address, like [`peer_addr`](Self::peer_addr).
    pub fn local_addr(&self) -> String {
        self.transport.local_address()
    }

    /// A reading half and a writing half, to use at the same time (send
    /// what `fill_buf` lent before consuming it, say).
    pub fn halves(&mut self) -> (ReadHalf<'_, T>, WriteHalf<'_, T>) {
        (ReadHalf { transport: &self.transport, rx: &mut self.rx }, WriteHalf { transport: &self.transport })
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
