//! The fault-injecting proxy itself: each mode does what cluster tests will rely on.

#[path = "support/proxy.rs"]
mod proxy;

use proxy::{Links, Mode, Proxy};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// An echo server with bounded threads that stops on drop.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (stop2, conns2) = (Arc::clone(&stop), Arc::clone(&conns));
        let thread = thread::spawn(move || {
            let mut workers = Vec::new();
            for stream in listener.incoming().take(16) {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                if let Ok(clone) = stream.try_clone() {
                    conns2.lock().expect("lock").push(clone);
                }
                workers.push(thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Echo {
            addr,
            stop,
            conns,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for c in self.conns.lock().expect("lock").iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Write `msg` and read the echo back within `timeout`; None if it did not come back.
fn round_trip(stream: &mut TcpStream, msg: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    stream.write_all(msg).ok()?;
    read_exactly(stream, msg.len(), timeout)
}

fn read_exactly(stream: &mut TcpStream, len: usize, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < len {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(_) => return None,
        }
    }
    Some(got)
}

/// Whether the connection gets closed (EOF or reset) within `timeout`.
fn is_closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn pass_forwards_both_directions() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut conn = TcpStream::connect(proxy.addr()).expect("connect");
    for i in 0..20u8 {
        let msg = vec![i; 1000];
        assert_eq!(
            round_trip(&mut conn, &msg, Duration::from_secs(2)),
            Some(msg)
        );
    }
    assert!(
        wait(|| proxy.bytes_forwarded() == 2 * 20 * 1000),
        "{} bytes forwarded",
        proxy.bytes_forwarded()
    );
    assert_eq!(proxy.active_connections(), 1);
}

#[test]
fn delay_holds_each_chunk_for_the_delay_and_keeps_order() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut conn = TcpStream::connect(proxy.addr()).expect("connect");
    assert!(round_trip(&mut conn, b"warm", Duration::from_secs(2)).is_some());
    proxy.set_mode(Mode::Delay(Duration::from_millis(100)));
    let start = Instant::now();
    conn.write_all(b"one-").expect("write");
    conn.write_all(b"two").expect("write");
    let got = read_exactly(&mut conn, 7, Duration::from_secs(3)).expect("delivered late");
    assert_eq!(got, b"one-two");
    // Delayed on the way there and on the way back.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn blackhole_holds_bytes_until_the_link_heals() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut conn = TcpStream::connect(proxy.addr()).expect("connect");
    assert!(round_trip(&mut conn, b"before", Duration::from_secs(2)).is_some());
    proxy.set_mode(Mode::Blackhole);
    assert_eq!(
        round_trip(&mut conn, b"held", Duration::from_millis(300)),
        None
    );
    // New connections are held too: accepted, but nothing crosses.
    let mut late = TcpStream::connect(proxy.addr()).expect("connect");
    assert_eq!(
        round_trip(&mut late, b"late", Duration::from_millis(200)),
        None
    );
    assert!(!is_closed_within(&mut conn, Duration::from_millis(100)));

    proxy.set_mode(Mode::Pass);
    assert_eq!(
        read_exactly(&mut conn, 4, Duration::from_secs(2)),
        Some(b"held".to_vec())
    );
    assert_eq!(
        read_exactly(&mut late, 4, Duration::from_secs(2)),
        Some(b"late".to_vec())
    );
}

#[test]
fn cut_closes_existing_connections_and_refuses_new_ones() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut conn = TcpStream::connect(proxy.addr()).expect("connect");
    assert!(round_trip(&mut conn, b"x", Duration::from_secs(2)).is_some());
    proxy.set_mode(Mode::Cut);
    assert!(is_closed_within(&mut conn, Duration::from_secs(2)));
    assert!(wait(|| proxy.active_connections() == 0));
    // A new connection is closed at once.
    if let Ok(mut fresh) = TcpStream::connect(proxy.addr()) {
        assert!(is_closed_within(&mut fresh, Duration::from_secs(2)));
    }
    proxy.set_mode(Mode::Pass);
    let mut healed = TcpStream::connect(proxy.addr()).expect("connect");
    assert!(round_trip(&mut healed, b"back", Duration::from_secs(2)).is_some());
}

#[test]
fn dropping_the_proxy_closes_connections_and_the_port() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let addr = proxy.addr();
    let mut conn = TcpStream::connect(addr).expect("connect");
    assert!(round_trip(&mut conn, b"x", Duration::from_secs(2)).is_some());
    let start = Instant::now();
    drop(proxy);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(is_closed_within(&mut conn, Duration::from_secs(1)));
    assert!(TcpStream::connect(addr).is_err(), "the port still accepts");
}

#[test]
fn links_build_symmetric_asymmetric_and_bridge_partitions() {
    let echoes: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
    let links = Links::new(3);
    // A connection made before the targets are known is held, then forwarded.
    let mut early = TcpStream::connect(links.addr(0, 1)).expect("connect");
    early.write_all(b"early").expect("write");
    links.set_targets(&echoes.iter().map(|e| e.addr).collect::<Vec<_>>());
    assert_eq!(
        read_exactly(&mut early, 5, Duration::from_secs(2)),
        Some(b"early".to_vec())
    );

    let reaches = |from: usize, to: usize| -> bool {
        TcpStream::connect(links.addr(from, to))
            .ok()
            .and_then(|mut c| round_trip(&mut c, b"ping", Duration::from_millis(500)))
            .is_some()
    };
    // Symmetric: {0, 1} | {2}.
    links.partition(&[&[0, 1], &[2]]);
    assert!(reaches(0, 1) && reaches(1, 0));
    assert!(!reaches(0, 2) && !reaches(2, 0) && !reaches(1, 2));
    // Bridge: 1 talks to both sides, 0 and 2 do not talk to each other.
    links.partition(&[&[0, 1], &[1, 2]]);
    assert!(reaches(0, 1) && reaches(1, 2) && reaches(2, 1));
    assert!(!reaches(0, 2) && !reaches(2, 0));
    // Asymmetric: 0 -> 2 works, 2 -> 0 does not.
    links.heal();
    links.set(2, 0, Mode::Cut);
    assert!(reaches(0, 2) && !reaches(2, 0));
    links.heal();
    assert!(reaches(2, 0));
}

fn wait(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}
