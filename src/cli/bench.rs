//! `haven bench wal`: synced WAL appends against the raw write + fdatasync floor.
//!
//! For each batch size (1, 16, 256 entries of 256 bytes) one caller appends a batch and waits
//! until it is durable, again and again, for `--seconds`. The floor is the same loop without
//! the WAL: `pwrite` of the same number of bytes as the WAL's record, then `fdatasync`, into a
//! plain file that was zero-filled and synced first (so, like a WAL segment, every write
//! overwrites allocated blocks). The two alternate per batch size so drift on a shared machine
//! hits both.

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
    let rows = result?;
    if args.json {
        println!("{}", to_json(&root, &fs, args.seconds, &rows));
    } else {
        print_table(&root, &fs, &rows);
    }
    Ok(())
}

fn measure_all(root: &Path, duration: Duration) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (k, &batch) in BATCHES.iter().enumerate() {
        let record_bytes = frame_len(encode_value(&make_batch(1, 1, batch))?.len());
        let floor = measure_floor(
            &root.join(format!("floor-{k}")),
            record_bytes,
            batch,
            duration,
        )?;
        let wal = measure_wal(&root.join(format!("wal-{k}")), batch, duration)?;
        rows.push(Row {
            batch,
            record_bytes,
            wal,
            floor,
        });
    }
    Ok(rows)
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
    // Warm up: first writes touch cold pages.
    for _ in 0..50 {
        append(&wal)?;
    }
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        latencies.push(append(&wal)?);
    }
    let elapsed = start.elapsed();
    drop(wal);
    let _ = std::fs::remove_dir_all(dir);
    Ok(Run {
        entries: (latencies.len() * batch) as u64,
        elapsed,
        latencies,
    })
}

fn measure_floor(path: &Path, bytes: usize, batch: usize, duration: Duration) -> Result<Run> {
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
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..FLOOR_FILE_BYTES >> 20 {
        file.write_all(&zeros).map_err(io("zero-filling"))?;
    }
    file.sync_all().map_err(io("syncing"))?;
    let buf = vec![0x5Au8; bytes];
    let mut offset = 0u64;
    let mut write = |file: &File| -> Result<Duration> {
        if offset + bytes as u64 > FLOOR_FILE_BYTES {
            offset = 0;
        }
        let start = Instant::now();
        file.write_all_at(&buf, offset).map_err(io("writing"))?;
        file.sync_data().map_err(io("fdatasync of"))?;
        offset += bytes as u64;
        Ok(start.elapsed())
    };
    for _ in 0..50 {
        write(&file)?;
    }
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        latencies.push(write(&file)?);
    }
    let elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(Run {
        entries: (latencies.len() * batch) as u64,
        elapsed,
        latencies,
    })
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

fn to_json(root: &Path, fs: &str, seconds: f64, rows: &[Row]) -> String {
    let results: Vec<String> = rows
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
    format!(
        "{{\"bench\":\"wal\",\"dir\":{},\"filesystem\":{},\"entry_bytes\":{ENTRY_BYTES},\
         \"seconds_per_run\":{seconds},\"results\":[{}]}}",
        json_string(&root.display().to_string()),
        json_string(fs),
        results.join(",")
    )
}

fn ratio(wal: &Run, floor: &Run) -> f64 {
    ms(wal.percentile(0.50)) / ms(floor.percentile(0.50)).max(1e-9)
}

fn print_table(root: &Path, fs: &str, rows: &[Row]) {
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
}
