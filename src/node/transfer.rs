//! Snapshot transfer between members: the follower *pulls* the snapshot file from the leader in
//! chunks, by offset, so that no side needs to know the size up front and a transfer resumes
//! where it stopped after a dropped connection.
//!
//! Follower side: when the driver hands over a `Snapshot` Raft message (only metadata: index,
//! term, membership), this thread asks the sender for the bytes at offset 0 (control lane),
//! appends each chunk it gets (bulk lane) to `snap/{index}-{term}.snap.part`, asks for the next
//! offset, and re-asks for the same offset if nothing comes for a while. After the last chunk it
//! fsyncs the file, renames it to its final snapshot name, fsyncs the directory and verifies it
//! completely (`snapshots::verify_snapshot`: every frame, the sha256); only then does it give the
//! driver the message to step into the core. A snapshot file of the same index and term that is
//! already here (taken locally, or fetched before a crash) is used without a transfer.
//!
//! Leader side: it answers each request with the chunk read at that offset from the snapshot
//! file of that index and term, or with `SnapshotGone` if that file was pruned meanwhile.
//!
//! Client side (a backup, `Client::save_snapshot`): the same chunks, read by offset, answered to
//! the client's `Request::SnapshotChunk`.
//!
//! File IO happens here, never on the driver, so a transfer does not delay heartbeats.

use super::peer_message::{PeerMessage, SnapshotChunk};
use super::reply::Reply;
use super::{Internal, NodeTransport};
use crate::error::{Error, Result};
use crate::event;
use crate::limits::SNAPSHOT_CHUNK_BYTES;
use crate::logging::Level;
use crate::park::Waking;
use crate::proto::Response;
use crate::raft::{Message, MessageBody};
use crate::snapshots::{list_snapshots, prune_snapshots, snapshot_file_name, verify_snapshot};
use crate::types::{LogIndex, NodeId, Term};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Re-ask for a chunk after this long without an answer.
const CHUNK_RETRY: Duration = Duration::from_millis(500);

/// Work for the transfer thread.
pub(crate) enum TransferTask {
    /// Leader: `to` asks for the chunk at `offset` of snapshot (`index`, `term`).
    Serve {
        to: NodeId,
        index: LogIndex,
        term: Term,
        offset: u64,
    },
    /// A client reads the chunk at `offset` of snapshot (`index`, `term`) (a backup).
    ServeClient {
        index: LogIndex,
        term: Term,
        offset: u64,
        reply: Reply,
    },
    /// Follower: fetch the data of this `Snapshot` message from its sender.
    Fetch(Message),
    /// Follower: a chunk arrived from `from`.
    Chunk { from: NodeId, chunk: SnapshotChunk },
    /// Follower: the leader no longer has the snapshot.
    Gone {
        from: NodeId,
        index: LogIndex,
        term: Term,
    },
    /// Delete snapshot files older than `keep_from`, except the newest of them (it may still
    /// be on its way to a follower).
    Prune { keep_from: LogIndex },
    /// Stop.
    Stop,
}

/// A download in progress.
struct Download {
    message: Message,
    from: NodeId,
    index: LogIndex,
    term: Term,
    part: PathBuf,
    file: File,
    offset: u64,
    sha256: Option<[u8; 32]>,
    asked_at: Instant,
    started: Instant,
    last_progress: Instant,
}

/// Test hook: stop serving chunks past this offset until the hook is cleared (a transfer cut
/// half way).
pub type ServeLimit = Arc<std::sync::atomic::AtomicU64>;

pub(crate) struct Transfer {
    pub(crate) id: NodeId,
    pub(crate) snap_dir: PathBuf,
    pub(crate) tasks: Receiver<TransferTask>,
    pub(crate) internal: Waking<Internal>,
    pub(crate) transport: Arc<NodeTransport>,
    /// Give up on a download after this long without progress.
    pub(crate) give_up_after: Duration,
    pub(crate) serve_limit: ServeLimit,
    download: Option<Download>,
    /// The file last served from, kept open between chunks.
    serving: Option<(LogIndex, Term, [u8; 32], File, u64)>,
}

impl Transfer {
    pub(crate) fn new(
        id: NodeId,
        snap_dir: PathBuf,
        tasks: Receiver<TransferTask>,
        internal: Waking<Internal>,
        transport: Arc<NodeTransport>,
        give_up_after: Duration,
        serve_limit: ServeLimit,
    ) -> Transfer {
        Transfer {
            id,
            snap_dir,
            tasks,
            internal,
            transport,
            give_up_after,
            serve_limit,
            download: None,
            serving: None,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let task = match self.tasks.recv_timeout(CHUNK_RETRY / 2) {
                Ok(task) => task,
                Err(RecvTimeoutError::Timeout) => {
                    self.check_download();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match task {
                TransferTask::Serve {
                    to,
                    index,
                    term,
                    offset,
                } => self.serve(to, index, term, offset),
                TransferTask::ServeClient {
                    index,
                    term,
                    offset,
                    reply,
                } => {
                    let chunk = self.read_chunk(index, term, offset);
                    if chunk.is_err() {
                        self.serving = None;
                    }
                    reply.send(chunk.map(Response::SnapshotChunk));
                }
                TransferTask::Fetch(message) => self.fetch(message),
                TransferTask::Chunk { from, chunk } => self.on_chunk(from, &chunk),
                TransferTask::Gone { from, index, term } => {
                    if self
                        .download
                        .as_ref()
                        .is_some_and(|d| d.from == from && d.index == index && d.term == term)
                    {
                        self.abandon("the leader no longer has the snapshot");
                    }
                }
                TransferTask::Prune { keep_from } => self.prune(keep_from),
                TransferTask::Stop => break,
            }
            self.check_download();
        }
        if let Some(d) = self.download.take() {
            // Keep the part file: nothing resumes from it across restarts, but it is harmless
            // and the next prune deletes it.
            drop(d);
        }
    }

    // ----- leader side -----

    fn serve(&mut self, to: NodeId, index: LogIndex, term: Term, offset: u64) {
        let limit = self.serve_limit.load(std::sync::atomic::Ordering::Relaxed);
        if offset >= limit {
            return; // test hook: the transfer "breaks" here
        }
        match self.read_chunk(index, term, offset) {
            Ok(Some(chunk)) => {
                self.transport
                    .send_bulk(to, PeerMessage::SnapshotChunk(chunk));
            }
            Ok(None) => {
                self.transport
                    .send(to, PeerMessage::SnapshotGone { index, term });
            }
            Err(e) => {
                event!(Level::Warn, node: Some(self.id.0), term: None,
                    "snapshot_read_failed", index = index.0, error = e);
                self.serving = None;
                self.transport
                    .send(to, PeerMessage::SnapshotGone { index, term });
            }
        }
    }

    /// The chunk at `offset` of snapshot (`index`, `term`), or
    /// `None` if there is no such snapshot (or the offset is past its end).
    fn read_chunk(
        &mut self,
        index: LogIndex,
        term: Term,
        offset: u64,
    ) -> Result<Option<SnapshotChunk>> {
        let cached = matches!(&self.serving, Some((i, t, _, _, _)) if *i == index && *t == term);
        if !cached {
            self.serving = None;
            let found = list_snapshots(&self.snap_dir)?
                .into_iter()
                .find(|s| s.index == index && s.term == term);
            let Some(found) = found else {
                return Ok(None);
            };
            let file = File::open(&found.path)
                .map_err(|e| Error::io(format!("opening {}", found.path.display()), e))?;
            let size = file
                .metadata()
                .map_err(|e| Error::io(format!("reading {}", found.path.display()), e))?
                .len();
            self.serving = Some((index, term, found.sha256, file, size));
        }
        let Some((_, _, sha256, file, size)) = &self.serving else {
            return Ok(None);
        };
        if offset > *size {
            return Ok(None);
        }
        let len = (*size - offset).min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
        let mut data = vec![0u8; len];
        file.read_exact_at(&mut data, offset)
            .map_err(|e| Error::io("reading a snapshot chunk", e))?;
        Ok(Some(SnapshotChunk {
            index,
            term,
            sha256: *sha256,
            offset,
            data,
            done: offset + len as u64 >= *size,
        }))
    }

    fn prune(&mut self, keep_from: LogIndex) {
        let result = list_snapshots(&self.snap_dir).and_then(|all| {
            let newer = all.iter().filter(|s| s.index >= keep_from).count();
            let keep = (newer + 1).min(all.len()).max(1);
            prune_snapshots(&self.snap_dir, keep)
        });
        match result {
            Ok(removed) if !removed.is_empty() => {
                event!(Level::Debug, node: Some(self.id.0), term: None, "snapshots_pruned",
                    removed = removed.len(), keep_from = keep_from.0);
            }
            Ok(_) => {}
            Err(e) => {
                event!(Level::Warn, node: Some(self.id.0), term: None, "snapshot_prune_failed",
                    error = e);
            }
        }
        // Leftover part files of downloads that are no longer running.
        if let Ok(entries) = std::fs::read_dir(&self.snap_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let is_part = path.extension().is_some_and(|e| e == "part");
                let current = self.download.as_ref().is_some_and(|d| d.part == path);
                if is_part && !current {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    // ----- follower side -----

    fn fetch(&mut self, message: Message) {
        let MessageBody::Snapshot { meta } = &message.body else {
            return;
        };
        let (index, term, from) = (meta.index, meta.term, message.from);
        if let Some(d) = &mut self.download {
            if d.index == index && d.term == term && d.from == from {
                d.message = message; // a newer copy (the leader resent it): keep going
                return;
            }
        }
        self.download = None;
        // Already here (taken locally, or fetched before)? Then no transfer is needed.
        if let Ok(all) = list_snapshots(&self.snap_dir) {
            if let Some(found) = all.iter().find(|s| s.index == index && s.term == term) {
                if verify_snapshot(&found.path).is_ok() {
                    self.internal.send(Internal::SnapshotFetched {
                        message,
                        path: found.path.clone(),
                    });
                    return;
                }
            }
        }
        let part = self
            .snap_dir
            .join(format!("{:020}-{:020}.snap.part", index.0, term.0));
        let file = std::fs::create_dir_all(&self.snap_dir).and_then(|()| {
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&part)
        });
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                event!(Level::Error, node: Some(self.id.0), term: None,
                    "snapshot_part_open_failed", path = part.display(), error = e);
                self.report_failure(from, index, term);
                return;
            }
        };
        event!(Level::Info, node: Some(self.id.0), term: None, "snapshot_fetch_started",
            from = from.0, index = index.0);
        let now = Instant::now();
        self.download = Some(Download {
            message,
            from,
            index,
            term,
            part,
            file,
            offset: 0,
            sha256: None,
            asked_at: now,
            started: now,
            last_progress: now,
        });
        self.ask();
    }

    fn ask(&mut self) {
        let Some(d) = &mut self.download else {
            return;
        };
        d.asked_at = Instant::now();
        self.transport.send(
            d.from,
            PeerMessage::SnapshotRequest {
                index: d.index,
                term: d.term,
                offset: d.offset,
            },
        );
    }

    fn on_chunk(&mut self, from: NodeId, chunk: &SnapshotChunk) {
        let SnapshotChunk {
            index,
            term,
            sha256,
            offset,
            ref data,
            done,
        } = *chunk;
        let Some(d) = &mut self.download else {
            return;
        };
        if d.from != from || d.index != index || d.term != term || d.offset != offset {
            return; // a duplicate or a chunk of another transfer
        }
        if d.sha256.is_some_and(|s| s != sha256) {
            self.abandon("the leader's snapshot changed during the transfer");
            return;
        }
        d.sha256 = Some(sha256);
        if let Err(e) = d.file.write_all(data) {
            let why = format!("writing {}: {e}", d.part.display());
            self.abandon(&why);
            return;
        }
        d.offset += data.len() as u64;
        d.last_progress = Instant::now();
        if done {
            self.finish();
        } else {
            self.ask();
        }
    }

    fn finish(&mut self) {
        let Some(d) = self.download.take() else {
            return;
        };
        let result = (|| -> Result<PathBuf> {
            crate::fs::sync_file(&d.file, &d.part)?;
            let sha256 = d.sha256.unwrap_or([0; 32]);
            let path = self
                .snap_dir
                .join(snapshot_file_name(d.index, d.term, &sha256));
            crate::fs::rename_durably(&d.part, &path)?;
            if let Err(e) = verify_snapshot(&path) {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            Ok(path)
        })();
        match result {
            Ok(path) => {
                event!(Level::Info, node: Some(self.id.0), term: None, "snapshot_fetched",
                    from = d.from.0, index = d.index.0, bytes = d.offset,
                    ms = d.started.elapsed().as_millis());
                self.internal.send(Internal::SnapshotFetched {
                    message: d.message,
                    path,
                });
            }
            Err(e) => {
                event!(Level::Warn, node: Some(self.id.0), term: None, "snapshot_fetch_failed",
                    from = d.from.0, index = d.index.0, error = e);
                let _ = std::fs::remove_file(&d.part);
                self.report_failure(d.from, d.index, d.term);
            }
        }
    }

    fn check_download(&mut self) {
        let Some(d) = &self.download else {
            return;
        };
        if d.last_progress.elapsed() >= self.give_up_after {
            self.abandon("no progress");
        } else if d.asked_at.elapsed() >= CHUNK_RETRY {
            // The request or its chunk was lost (a dropped connection): ask again for the same
            // offset; the transfer resumes there.
            self.ask();
        }
    }

    fn abandon(&mut self, why: &str) {
        if let Some(d) = self.download.take() {
            event!(Level::Warn, node: Some(self.id.0), term: None, "snapshot_fetch_abandoned",
                from = d.from.0, index = d.index.0, offset = d.offset, reason = why);
            let _ = std::fs::remove_file(&d.part);
            self.report_failure(d.from, d.index, d.term);
        }
    }

    fn report_failure(&self, from: NodeId, index: LogIndex, term: Term) {
        self.transport.send(
            from,
            PeerMessage::SnapshotDone {
                index,
                term,
                ok: false,
            },
        );
        self.internal
            .send(Internal::SnapshotFetchFailed { index, term });
    }
}
