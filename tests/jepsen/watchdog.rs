//! The last resort against a hung run: after its time limit the watchdog writes the history
//! so far, kills every member and ends the test process with a failure.

use crate::cluster::Processes;
use crate::history::{self, History};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Disarmed (and its thread joined) on drop.
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Fire after `limit` unless dropped first.
    pub fn start(
        limit: Duration,
        seed: u64,
        processes: Arc<Processes>,
        history: Arc<History>,
        history_path: PathBuf,
    ) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let thread_done = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("jepsen-watchdog".into())
            .spawn(move || {
                let deadline = Instant::now() + limit;
                // Bounded by `limit`.
                while Instant::now() < deadline {
                    if thread_done.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                eprintln!(
                    "jepsen watchdog: the test did not finish within {limit:?} (seed {seed}); \
                     killing every member"
                );
                processes.kill_all();
                match history::write_file(&history_path, &history.events()) {
                    Ok(()) => eprintln!(
                        "jepsen watchdog: history so far kept at {}",
                        history_path.display()
                    ),
                    Err(e) => eprintln!("jepsen watchdog: could not write the history: {e}"),
                }
                std::process::exit(3);
            })
            .expect("spawn the watchdog");
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
