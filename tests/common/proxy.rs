//! A TCP proxy in front of the test PostgreSQL that can make one COMMIT lose its answer: it
//! forwards the COMMIT, lets the server commit, and closes the client's connection without
//! passing the reply on — what a network cut or a killed backend does at the worst moment.
//! Armed late, it closes the client's connection first and forwards the COMMIT only later:
//! a network that delays the COMMIT, or a server slow to finish it, past the client's
//! giving up. It can also hold back the server's answer to a chosen statement for a while
//! (the statement runs and commits at once, its answer arrives late): a freeze or a slow
//! network between a statement and its reply.

use std::{
    collections::VecDeque,
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// The simple-query message `COMMIT` (what `Transaction::commit` sends).
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// The proxy; stops when dropped.
pub struct CommitCutter {
    port: u16,
    armed: Arc<AtomicBool>,
    late_ms: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    holds: Arc<Holds>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// Answers to hold back: the statements whose text contains `pattern`, one delay each, in
/// order; and how many were held so far.
#[derive(Default)]
struct Holds {
    pattern: Mutex<Vec<u8>>,
    delays: Mutex<VecDeque<Duration>>,
    held: AtomicU64,
}

impl Holds {
    /// The delay for a client message, if it carries the pattern and a delay is left.
    fn take(&self, message: &[u8]) -> Option<Duration> {
        let pattern = self.pattern.lock().unwrap();
        if pattern.is_empty() || !message.windows(pattern.len()).any(|w| w == &pattern[..]) {
            return None;
        }
        self.delays.lock().unwrap().pop_front()
    }
}

impl CommitCutter {
    /// Listens on 127.0.0.1 and forwards to `upstream` (host:port).
    pub fn start(upstream: String) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let late_ms = Arc::new(AtomicU64::new(0));
        let cuts = Arc::new(AtomicU64::new(0));
        let holds = Arc::new(Holds::default());
        let h = Arc::clone(&holds);
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, s) = (Arc::clone(&armed), Arc::clone(&cuts), Arc::clone(&stop));
        let l = Arc::clone(&late_ms);
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(&upstream) {
                            let cut = Cut {
                                armed: Arc::clone(&a),
                                late_ms: Arc::clone(&l),
                                cuts: Arc::clone(&c),
                                holds: Arc::clone(&h),
                            };
                            pump(client, server, cut);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CommitCutter {
            port,
            armed,
            late_ms,
            cuts,
            holds,
            stop,
            accept: Some(accept),
        }
    }

    /// The next COMMIT through the proxy loses its answer.
    pub fn arm(&self) {
        self.late_ms.store(0, Ordering::Release);
        self.armed.store(true, Ordering::Release);
    }

    /// The next COMMIT through the proxy loses its answer, and reaches the server only
    /// `delay` after the client's connection was closed.
    pub fn arm_late(&self, delay: Duration) {
        self.late_ms
            .store(delay.as_millis() as u64, Ordering::Release);
        self.armed.store(true, Ordering::Release);
    }

    /// The next statements whose text contains `pattern` run at once, but their answers
    /// reach the client only after the next delay of `delays` each (one per statement).
    /// The text travels in the Parse message; the answer held is that of the client's next
    /// message (Bind and Execute: rust-postgres prepares a statement given as text, waits,
    /// then runs it).
    pub fn hold_answers(&self, pattern: &[u8], delays: &[Duration]) {
        *self.holds.pattern.lock().unwrap() = pattern.to_vec();
        *self.holds.delays.lock().unwrap() = delays.iter().copied().collect();
    }

    /// Answers held back so far (counted when the held answer reached the proxy: its
    /// statement has run).
    pub fn held(&self) -> u64 {
        self.holds.held.load(Ordering::Acquire)
    }

    /// COMMITs cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Acquire)
    }

    /// `url` (a key=value connection string) pointed at the proxy.
    pub fn url(&self, url: &str) -> String {
        url.split_whitespace()
            .map(|kv| {
                if kv.starts_with("port=") {
                    format!("port={}", self.port)
                } else {
                    kv.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The proxy's switches, shared by every connection.
struct Cut {
    armed: Arc<AtomicBool>,
    late_ms: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    holds: Arc<Holds>,
}

/// Copies both ways; a COMMIT seen while armed is forwarded, its reply swallowed, and the
/// client's connection closed (armed late: closed first, the COMMIT forwarded later); the
/// answer to the message after a held statement's text waits its delay.
fn pump(client: TcpStream, server: TcpStream, switches: Cut) {
    let cut = Arc::new(AtomicBool::new(false));
    let hold_ms = Arc::new(AtomicU64::new(0));
    let (mut from_server, mut to_client) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    let cut_reply = Arc::clone(&cut);
    let (hold_reply, holds) = (Arc::clone(&hold_ms), Arc::clone(&switches.holds));
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from_server.read(&mut buf) {
            let hold = hold_reply.swap(0, Ordering::AcqRel);
            if hold > 0 {
                holds.held.fetch_add(1, Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(hold));
            }
            if n == 0
                || cut_reply.load(Ordering::Acquire)
                || to_client.write_all(&buf[..n]).is_err()
            {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let (mut from_client, mut to_server) = (client, server);
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut next_hold: Option<Duration> = None;
        while let Ok(n) = from_client.read(&mut buf) {
            if n == 0 {
                break;
            }
            // Set before forwarding, so the answer finds it.
            if let Some(d) = next_hold.take() {
                hold_ms.store(d.as_millis() as u64, Ordering::Release);
            } else {
                next_hold = switches.holds.take(&buf[..n]);
            }
            let is_commit = buf[..n].windows(COMMIT.len()).any(|w| w == COMMIT);
            if is_commit && switches.armed.swap(false, Ordering::AcqRel) {
                cut.store(true, Ordering::Release);
                switches.cuts.fetch_add(1, Ordering::AcqRel);
                let late = switches.late_ms.load(Ordering::Acquire);
                if late > 0 {
                    let _ = from_client.shutdown(Shutdown::Both);
                    std::thread::sleep(Duration::from_millis(late));
                }
                let _ = to_server.write_all(&buf[..n]);
                // Let the server commit before the client's side goes away.
                std::thread::sleep(Duration::from_millis(300));
                let _ = from_client.shutdown(Shutdown::Both);
                break;
            }
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Both);
    });
}
