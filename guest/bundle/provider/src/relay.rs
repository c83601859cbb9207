//! `wait` and `splice`, over `wasi:io/poll`: one poll on the pollables of
//! every watched stream and a timer for the idle timeout.

use crate::connection::{idle_timer, Connection};
use crate::exports::netplug::protocol::types::{ConnectionBorrow, ErrorCode, Guest, Readiness, Spliced};
use crate::wasi::io::poll::{poll, Pollable};
use crate::Provider;

/// What one direction of a splice reads at a time.
const CHUNK: u32 = 32 * 1024;

impl Guest for Provider {
    type Connection = Connection;

    fn wait(watched: Vec<(ConnectionBorrow<'_>, Readiness)>) -> Result<Vec<Readiness>, ErrorCode> {
        let conns: Vec<(&Connection, Readiness)> = watched.iter().map(|(c, r)| (c.get::<Connection>(), *r)).collect();
        if conns.is_empty() || conns.iter().all(|(_, r)| r.is_empty()) {
            return Err(ErrorCode::InvalidArgument);
        }
        // A failed connection is ready for anything at once.
        if conns.iter().any(|(c, r)| !r.is_empty() && c.check().is_err()) {
            return Ok(conns.iter().map(|(c, r)| if c.check().is_err() { *r } else { Readiness::empty() }).collect());
        }
        let mut pollables: Vec<Pollable> = Vec::new();
        let mut meaning: Vec<(usize, Readiness)> = Vec::new();
        for (i, (c, r)) in conns.iter().enumerate() {
            if r.contains(Readiness::READABLE) {
                pollables.push(c.readable());
                meaning.push((i, Readiness::READABLE));
            }
            if r.contains(Readiness::WRITABLE) {
                pollables.push(c.writable());
                meaning.push((i, Readiness::WRITABLE));
            }
        }
        pollables.push(idle_timer());
        let refs: Vec<&Pollable> = pollables.iter().collect();
        let mut ready = vec![Readiness::empty(); conns.len()];
        for index in poll(&refs) {
            if let Some(&(i, flag)) = meaning.get(index as usize) {
                ready[i] |= flag;
            }
        }
        if ready.iter().all(|r| r.is_empty()) {
            for (c, _) in &conns {
                c.fail(ErrorCode::TimedOut);
            }
            return Err(ErrorCode::TimedOut);
        }
        Ok(ready)
    }

    fn splice(a: ConnectionBorrow<'_>, b: ConnectionBorrow<'_>) -> Spliced {
        let (a, b) = (a.get::<Connection>(), b.get::<Connection>());
        let mut ab = Direction::new(a, b);
        let mut ba = Direction::new(b, a);
        let ended = splice(&mut ab, &mut ba);
        Spliced { a_to_b: ab.moved, b_to_a: ba.moved, ended }
    }
}

fn splice<'a>(ab: &mut Direction<'a>, ba: &mut Direction<'a>) -> Result<(), ErrorCode> {
    if std::ptr::eq(ab.from, ab.to) {
        return Err(ErrorCode::InvalidArgument);
    }
    ab.from.check()?;
    ab.to.check()?;
    if ab.from.is_shut() || ab.to.is_shut() {
        return Err(ErrorCode::Closed);
    }
    loop {
        let mut progress = false;
        for d in [&mut *ab, &mut *ba] {
            while !d.done && d.step()? {
                progress = true;
            }
        }
        if ab.done && ba.done {
            return Ok(());
        }
        if progress {
            continue;
        }
        let mut pollables: Vec<Pollable> = [&*ab, &*ba].iter().filter(|d| !d.done).map(|d| d.pollable()).collect();
        pollables.push(idle_timer());
        let refs: Vec<&Pollable> = pollables.iter().collect();
        let timer = (refs.len() - 1) as u32;
        if poll(&refs).iter().all(|&i| i == timer) {
            ab.from.fail(ErrorCode::TimedOut);
            ab.to.fail(ErrorCode::TimedOut);
            return Err(ErrorCode::TimedOut);
        }
    }
}

/// One way of a splice: bytes read from `from`, held until `to` takes
/// them, then its end of stream passed on as `to`'s write shutdown.
struct Direction<'a> {
    from: &'a Connection,
    to: &'a Connection,
    pending: Vec<u8>,
    sent: usize,
    eof: bool,
    done: bool,
    moved: u64,
}

impl<'a> Direction<'a> {
    fn new(from: &'a Connection, to: &'a Connection) -> Self {
        Direction { from, to, pending: Vec::new(), sent: 0, eof: false, done: false, moved: 0 }
    }

    fn has_pending(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// What this direction waits for: `to` writable with bytes pending,
    /// else `from` readable.
    fn pollable(&self) -> Pollable {
        if self.has_pending() {
            self.to.writable()
        } else {
            self.from.readable()
        }
    }

    /// Moves what can move now; whether anything did.
    fn step(&mut self) -> Result<bool, ErrorCode> {
        if self.has_pending() {
            let n = self.to.write_now(&self.pending[self.sent..])?;
            self.sent += n;
            self.moved += n as u64;
            return Ok(n > 0);
        }
        if !self.eof {
            return match self.from.read_now(CHUNK)? {
                None => Ok(false),
                Some(data) if data.is_empty() => {
                    self.eof = true;
                    Ok(true)
                }
                Some(data) => {
                    self.pending = data;
                    self.sent = 0;
                    Ok(true)
                }
            };
        }
        self.to.shutdown_write()?;
        self.done = true;
        Ok(true)
    }
}
