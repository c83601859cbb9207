//! A test guest that misbehaves on request. It starts like the seed server
//! (sends `HELLO,WORLD`, reads up to 1024 bytes); if what it read is one of
//! the trigger words below, it attacks the host in that way, otherwise it
//! logs the bytes and closes like the seed. The sandbox tests run one hostile
//! connection beside many good ones and check that only the hostile one
//! suffers.

wit_bindgen::generate!({ path: "../../../wit", world: "server" });

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::dialer::connect;
use netplug::protocol::log::{enabled, log, Level};
use netplug::protocol::types::{splice, wait, Connection, Readiness};
use std::cell::RefCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

static SERVED: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static KEPT: RefCell<Vec<Connection>> = const { RefCell::new(Vec::new()) };
}

struct Hostile;

impl Guest for Hostile {
    fn handle(conn: Connection) -> Result<(), String> {
        conn.send(b"HELLO,WORLD").map_err(|e| format!("send failed: {}", e.name()))?;
        let data = conn.recv(1024).map_err(|e| format!("recv failed: {}", e.name()))?;
        let text = String::from_utf8_lossy(&data);
        let mut words = text.split_whitespace();
        match words.next().unwrap_or("") {
            "loop" => spin(),
            "alloc" => hoard(),
            "recurse" => {
                recurse(black_box(1));
            }
            "oob" => {
                out_of_bounds();
            }
            "panic" => panic!("hostile guest panics on purpose"),
            "flood" => flood(&conn),
            "recv4g" => {
                // Ask for 4 GiB; report how much the host actually handed over.
                let got = conn.recv(u32::MAX).map_err(|e| e.name().to_string())?;
                conn.send(format!("recv returned {} bytes\n", got.len()).as_bytes())
                    .map_err(|e| e.name().to_string())?;
            }
            "logwhile" => {
                // Reports what `enabled` says per level, then logs for as
                // long as the host says a line would appear, and reports how
                // many lines that was.
                let levels = [Level::Debug, Level::Info, Level::Warn].map(|l| enabled(l) as u8);
                let mut lines = 0;
                while enabled(Level::Info) && lines < 100_000 {
                    log(Level::Info, "logging while enabled");
                    lines += 1;
                }
                let report = format!("debug {} info {} warn {} lines {lines}\n", levels[0], levels[1], levels[2]);
                conn.send(report.as_bytes()).map_err(|e| e.name().to_string())?;
            }
            "count" => {
                // Connections this instance has served: 1 unless the host
                // reuses instances.
                let n = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
                conn.send(format!("count {n}\n").as_bytes()).map_err(|e| e.name().to_string())?;
            }
            "keep" => {
                // Hides the connection in a static, as if to use it later.
                KEPT.with(|k| k.borrow_mut().push(conn));
                return Ok(());
            }
            "sleep" => {
                // Blocks in a WASI call, where epochs cannot interrupt it.
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
            "logflood" => loop {
                log(Level::Info, "flooding the log");
            },
            "dial" => {
                let target = words.next().unwrap_or("127.0.0.1:1");
                let reply = match connect(target) {
                    Ok(_) => "dial: connected\n".to_string(),
                    Err(e) => format!("dial: {}\n", e.name()),
                };
                conn.send(reply.as_bytes()).map_err(|e| e.name().to_string())?;
            }
            "dialdenied" => {
                // A denied dial, again and again, to a 64 KiB address: the
                // host must not log each one, nor all of the address.
                let target = format!("{}:1", "a".repeat(64 * 1024));
                let denied = (0..10_000).filter(|_| connect(&target).is_err()).count();
                conn.send(format!("dialdenied: {denied}\n").as_bytes()).map_err(|e| e.name().to_string())?;
            }
            "newlines" => {
                // 8 MiB of empty lines on stdout in one write.
                use std::io::Write;
                let written = std::io::stdout().write_all(&vec![b'\n'; 8 << 20]).is_ok();
                conn.send(format!("newlines: {written}\n").as_bytes()).map_err(|e| e.name().to_string())?;
            }
            "dialmany" => {
                let target = words.next().unwrap_or("127.0.0.1:1");
                let mut held = Vec::new();
                let reply = loop {
                    match connect(target) {
                        Ok(c) => held.push(c),
                        Err(e) => break format!("dialmany: {} after {}\n", e.name(), held.len()),
                    }
                    if held.len() >= 100_000 {
                        break "dialmany: never refused\n".to_string();
                    }
                };
                conn.send(reply.as_bytes()).map_err(|e| e.name().to_string())?;
            }
            "waitnothing" => {
                let reply = match wait(&[(&conn, Readiness::empty())]) {
                    Ok(_) => "waitnothing: ready\n".to_string(),
                    Err(e) => format!("waitnothing: {}\n", e.name()),
                };
                conn.send(reply.as_bytes()).map_err(|e| e.name().to_string())?;
            }
            "tryflood" => try_flood(&conn),
            "splicebad" => {
                // A connection with itself, then one shut for writing (the
                // upstream is dialed at the address given).
                let same = splice(&conn, &conn);
                let target = words.next().unwrap_or("127.0.0.1:1");
                let other = connect(target).map_err(|e| format!("dial: {}", e.name()))?;
                other.shutdown().map_err(|e| e.name().to_string())?;
                let shut = splice(&conn, &other);
                let name = |s: &netplug::protocol::types::Spliced| match s.ended {
                    Ok(()) => "ok",
                    Err(e) => e.name(),
                };
                let reply = format!("splicebad: itself {}, shut {}\n", name(&same), name(&shut));
                conn.send(reply.as_bytes()).map_err(|e| e.name().to_string())?;
            }
            _ => log(Level::Info, &format!("received {} bytes: {}", data.len(), data.escape_ascii())),
        }
        Ok(())
    }
}

/// Sends without blocking until something fails: `try-send` while the
/// connection takes bytes, `wait` for room when it does not. Logs what
/// failed, and what a `try-send` after that failure returns.
fn try_flood(conn: &Connection) {
    let chunk = vec![0x55u8; 64 * 1024];
    let failure = loop {
        match conn.try_send(&chunk) {
            Ok(0) => {
                if let Err(e) = wait(&[(conn, Readiness::WRITABLE)]) {
                    break format!("wait {}", e.name());
                }
            }
            Ok(_) => {}
            Err(e) => break format!("try-send {}", e.name()),
        }
    };
    let then = match conn.try_send(b"x") {
        Ok(n) => format!("{n} bytes"),
        Err(e) => e.name().to_string(),
    };
    log(Level::Info, &format!("tryflood: {failure}, then try-send {then}"));
}

/// Computes forever without calling the host.
fn spin() -> ! {
    let mut x: u64 = 1;
    loop {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Grows memory a MiB at a time until the allocator fails.
fn hoard() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![1u8; 1 << 20]));
    }
}

/// Recurses until the wasm call stack is exhausted. The call goes through an
/// opaque function pointer so it can be neither inlined nor turned into a
/// loop, and keeps its state in wasm locals so the guest's own shadow stack
/// in linear memory is not what runs out first.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let next: fn(u64) -> u64 = black_box(recurse);
    next(n + 1).wrapping_add(n)
}

/// Reads past the end of linear memory.
fn out_of_bounds() -> u64 {
    // SAFETY: none; the point is the trap.
    unsafe { std::ptr::read_volatile(black_box(0xFFFF_FFF0usize) as *const u64) }
}

/// Sends without end, ignoring every error.
fn flood(conn: &Connection) -> ! {
    let chunk = vec![b'x'; 64 * 1024];
    loop {
        let _ = conn.send(&chunk);
    }
}

export!(Hostile);
