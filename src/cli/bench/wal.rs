//! `haven bench wal`: synced WAL appends against the raw write + fdatasync floor.
//!
//! For each batch size (1, 16, 256 entries of 256 bytes) one caller appends a batch and waits
//! until it is durable, again and again, for `--seconds`. The floor is the same loop without
//! the WAL: `pwrite` of the same number of bytes as the WAL's record, then `fdatasync`, into a
//! plain file that was zero-filled and synced first (so, like a WAL segment, every write
//! overwrites allocated blocks). The two alternate per batch size so drift on a shared machine
//! hits both.

use crate::cli::progress::{Plain, Progress};
use haven::codec::{encode_value, frame_len};
use haven::wal::{Wal, WalOptions, WriteBatch};
use haven::{Entry, EntryKind, Error, GroupId, LogIndex, Result, Term};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes of each entry's payload.
const ENTRY_BYTES: usize = 256;
/// Batch sizes measured.
const BATCHES: [usize; 3] = [1, 16, 256];
/// Size of the floor's file (written round and round).
const FLOOR_FILE_BYTES: u64 = 64 << 20;

/// Options of `haven bench wal`.
#[derive(clap::Args, Debug)]
pub struct WalBenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Directory to measure in (default: a new directory under the current one, so the
    /// measurement is of the working directory's filesystem, not of a tmpfs /tmp).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds to measure each batch size (the floor gets the same).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
}

/// Latencies of one measured loop.
struct Run {
    entries: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied().unwrap_or_default()
    }

    fn entries_per_sec(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One batch size's result.
/// p50/p99 of a 4 KiB pwrite + fdatasync under each way of preparing a file.
struct PreallocRow {
    mode: &'static str,
    run: Run,
}

/// Everything measured.
struct Report {
    rows: Vec<Row>,
    prealloc: Vec<PreallocRow>,
}

struct Row {
    batch: usize,
    record_bytes: usize,
    wal: Run,
    floor: Run,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Run the benchmark and print its result.
pub fn run_wal(args: &WalBenchArgs) -> Result<()> {
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err(Error::InvalidArgument(format!(
            "--seconds must be in (0, 3600], got {}",
            args.seconds
        )));
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let (root, owned) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            (dir.clone(), false)
        }
        None => {
            let cwd =
                std::env::current_dir().map_err(|e| Error::io("reading the current dir", e))?;
            let dir = cwd.join(format!(".haven-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            (dir, true)
        }
    };
    let fs = filesystem_name(&root);
    let result = measure_all(&root, duration);
    if owned {
        let _ = std::fs::remove_dir_all(&root);
    }
    let report = result?;
    if args.json {
        println!("{}", to_json(&root, &fs, args.seconds, &report));
    } else {
        print_table(&root, &fs, &report);
    }
    Ok(())
}

fn measure_all(root: &Path, duration: Duration) -> Result<Report> {
    // A phase each: floor and WAL per batch size, then three ways to prepare a file.
    let mut progress = Progress::new("phases", BATCHES.len() as u64 * 2 + 3, Plain::Silent);
    let mut phase = 0;
    let mut rows = Vec::new();
    for (k, &batch) in BATCHES.iter().enumerate() {
        let record_bytes = frame_len(encode_value(&make_batch(1, 1, batch))?.len());
        progress.set(phase, &format!("floor, batch {batch}"));
        phase += 1;
        let floor = measure_floor(
            &root.join(format!("floor-{k}")),
            record_bytes,
            batch,
            duration,
        )?;
        progress.set(phase, &format!("WAL, batch {batch}"));
        phase += 1;
        let wal = measure_wal(&root.join(format!("wal-{k}")), batch, duration)?;
        rows.push(Row {
            batch,
            record_bytes,
            wal,
            floor,
        });
    }
    // Why the WAL zero-fills its segments rather than fallocating them (docs/ARCHITECTURE.md).
    let mut prealloc = Vec::new();
    for (mode, how) in [
        ("zero-filled", Prealloc::Zeroed),
        ("fallocated", Prealloc::Fallocated),
        ("appending", Prealloc::Appending),
    ] {
        progress.set(phase, &format!("4 KiB writes, {mode}"));
        phase += 1;
        let run = measure_file(&root.join("prealloc"), 4096, 1, duration / 2, how)?;
        prealloc.push(PreallocRow { mode, run });
    }
    progress.finish(phase);
    Ok(Report { rows, prealloc })
}

fn make_batch(first: u64, term: u64, count: usize) -> Vec<Entry> {
    (0..count as u64)
        .map(|k| Entry {
            group: GroupId(0),
            term: Term(term),
            index: LogIndex(first + k),
            kind: EntryKind::Normal,
            data: vec![(k % 251) as u8; ENTRY_BYTES],
        })
        .collect()
}

fn measure_wal(dir: &Path, batch: usize, duration: Duration) -> Result<Run> {
    let (wal, _) = Wal::open(dir, WalOptions::default())?;
    let mut next = 1u64;
    let mut append = |wal: &Wal| -> Result<Duration> {
        let entries = make_batch(next, 1, batch);
        next += batch as u64;
        let start = Instant::now();
        wal.write(WriteBatch {
            entries,
            ..WriteBatch::default()
        })?;
        Ok(start.elapsed())
    };
    let run = timed(duration, batch, || append(&wal));
    drop(wal);
    let _ = std::fs::remove_dir_all(dir);
    run
}

/// Warm up with 50 calls of `op` (first writes touch cold pages), then call it until `duration`
/// has passed, each call writing `batch` entries and returning its latency.
fn timed(
    duration: Duration,
    batch: usize,
    mut op: impl FnMut() -> Result<Duration>,
) -> Result<Run> {
    for _ in 0..50 {
        op()?;
    }
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        latencies.push(op()?);
    }
    Ok(Run {
        entries: (latencies.len() * batch) as u64,
        elapsed: start.elapsed(),
        latencies,
    })
}

/// How the floor's file is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prealloc {
    /// Zero-filled and synced (what the WAL does): writes overwrite allocated, written blocks.
    Zeroed,
    /// `fallocate`d and synced: writes land in unwritten extents.
    Fallocated,
    /// Empty: every write extends the file.
    Appending,
}

fn measure_floor(path: &Path, bytes: usize, batch: usize, duration: Duration) -> Result<Run> {
    measure_file(path, bytes, batch, duration, Prealloc::Zeroed)
}

fn measure_file(
    path: &Path,
    bytes: usize,
    batch: usize,
    duration: Duration,
    prealloc: Prealloc,
) -> Result<Run> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |e| Error::io(what, e)
    };
    let mut file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io("creating"))?;
    match prealloc {
        Prealloc::Zeroed => {
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..FLOOR_FILE_BYTES >> 20 {
                file.write_all(&zeros).map_err(io("zero-filling"))?;
            }
        }
        Prealloc::Fallocated => {
            use std::os::unix::io::AsRawFd;
            // SAFETY: fallocate on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, FLOOR_FILE_BYTES as i64) };
            if rc != 0 {
                return Err(Error::io(
                    format!("fallocate of {}", path.display()),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Prealloc::Appending => {}
    }
    file.sync_all().map_err(io("syncing"))?;
    let buf = vec![0x5Au8; bytes];
    let mut offset = 0u64;
    let mut write = |file: &File| -> Result<Duration> {
        if offset + bytes as u64 > FLOOR_FILE_BYTES {
            // A fallocated or growing file would turn into a rewritten one: start a new file.
            if prealloc != Prealloc::Zeroed {
                file.set_len(0).map_err(io("truncating"))?;
                if prealloc == Prealloc::Fallocated {
                    use std::os::unix::io::AsRawFd;
                    // SAFETY: as above.
                    let rc =
                        unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, FLOOR_FILE_BYTES as i64) };
                    if rc != 0 {
                        return Err(Error::io(
                            format!("fallocate of {}", path.display()),
                            std::io::Error::last_os_error(),
                        ));
                    }
                }
                file.sync_all().map_err(io("syncing"))?;
            }
            offset = 0;
        }
        let start = Instant::now();
        file.write_all_at(&buf, offset).map_err(io("writing"))?;
        file.sync_data().map_err(io("fdatasync of"))?;
        offset += bytes as u64;
        Ok(start.elapsed())
    };
    let run = timed(duration, batch, || write(&file));
    drop(file);
    let _ = std::fs::remove_file(path);
    run
}

/// The filesystem type of `path`, by `statfs` magic number.
fn filesystem_name(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a writable statfs buffer.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return "unknown".into();
    }
    match stat.f_type as u64 {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x0102_1997 => "9p".into(),
        other => format!("0x{other:x}"),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn to_json(root: &Path, fs: &str, seconds: f64, report: &Report) -> String {
    let results: Vec<String> = report
        .rows
        .iter()
        .map(|r| {
            format!(
                "{{\"batch_entries\":{},\"record_bytes\":{},\"entries_per_sec\":{:.1},\
                 \"p50_ms\":{:.4},\"p99_ms\":{:.4},\"floor_entries_per_sec\":{:.1},\
                 \"floor_p50_ms\":{:.4},\"floor_p99_ms\":{:.4},\"ratio_p50_to_floor\":{:.3}}}",
                r.batch,
                r.record_bytes,
                r.wal.entries_per_sec(),
                ms(r.wal.percentile(0.50)),
                ms(r.wal.percentile(0.99)),
                r.floor.entries_per_sec(),
                ms(r.floor.percentile(0.50)),
                ms(r.floor.percentile(0.99)),
                ratio(&r.wal, &r.floor),
            )
        })
        .collect();
    let prealloc: Vec<String> = report
        .prealloc
        .iter()
        .map(|p| {
            format!(
                "{{\"file\":{},\"p50_ms\":{:.4},\"p99_ms\":{:.4}}}",
                json_string(p.mode),
                ms(p.run.percentile(0.50)),
                ms(p.run.percentile(0.99))
            )
        })
        .collect();
    format!(
        "{{\"bench\":\"wal\",\"dir\":{},\"filesystem\":{},\"entry_bytes\":{ENTRY_BYTES},\
         \"seconds_per_run\":{seconds},\"results\":[{}],\"preallocation_4k_fdatasync\":[{}]}}",
        json_string(&root.display().to_string()),
        json_string(fs),
        results.join(","),
        prealloc.join(",")
    )
}

fn ratio(wal: &Run, floor: &Run) -> f64 {
    ms(wal.percentile(0.50)) / ms(floor.percentile(0.50)).max(1e-9)
}

fn print_table(root: &Path, fs: &str, report: &Report) {
    let rows = &report.rows;
    println!(
        "haven bench wal: {} ({fs}), entries of {ENTRY_BYTES} bytes",
        root.display()
    );
    if fs == "tmpfs" {
        println!("warning: tmpfs does not reach a disk; fdatasync costs nothing here");
    }
    println!(
        "{:>6} {:>8} {:>12} {:>9} {:>9} {:>12} {:>9} {:>9} {:>7}",
        "batch",
        "bytes",
        "entries/s",
        "p50 ms",
        "p99 ms",
        "floor e/s",
        "floor p50",
        "floor p99",
        "ratio"
    );
    for r in rows {
        println!(
            "{:>6} {:>8} {:>12.0} {:>9.3} {:>9.3} {:>12.0} {:>9.3} {:>9.3} {:>7.2}",
            r.batch,
            r.record_bytes,
            r.wal.entries_per_sec(),
            ms(r.wal.percentile(0.50)),
            ms(r.wal.percentile(0.99)),
            r.floor.entries_per_sec(),
            ms(r.floor.percentile(0.50)),
            ms(r.floor.percentile(0.99)),
            ratio(&r.wal, &r.floor),
        );
    }
    println!("4 KiB pwrite + fdatasync by how the file was prepared:");
    for p in &report.prealloc {
        println!(
            "  {:<12} p50 {:.3} ms  p99 {:.3} ms",
            p.mode,
            ms(p.run.percentile(0.50)),
            ms(p.run.percentile(0.99))
        );
    }
}
