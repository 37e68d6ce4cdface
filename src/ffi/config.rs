//! Opening a handle: a member in this process (`haven_config_*`, `haven_open`) or a remote
//! client (`haven_connect`, `haven_connect_with`), and closing it.

use super::args::{self, text};
use super::{entry, haven_t};
use crate::error::{Error, Result};
use crate::net::{ClientTls, ClusterSecret, MemberTls};
use crate::{Client, ClientOptions, ClusterId, Config, Node, NodeId, ReadMode};
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Reads confirmed with a quorum: they see every write acknowledged before they started.
pub const HAVEN_READ_LINEARIZABLE: c_int = 0;
/// Reads served from the member's local state at once: fast, may miss recent writes.
pub const HAVEN_READ_STALE: c_int = 1;

pub(crate) fn read_mode(name: &str, mode: c_int) -> Result<ReadMode> {
    match mode {
        HAVEN_READ_LINEARIZABLE => Ok(ReadMode::Linearizable),
        HAVEN_READ_STALE => Ok(ReadMode::Stale),
        other => Err(Error::InvalidArgument(format!(
            "{name}: {other} is not HAVEN_READ_LINEARIZABLE (0) or HAVEN_READ_STALE (1)"
        ))),
    }
}

/// The settings of a member to open with `haven_open`, given as text by `haven_config_set`.
/// Opaque to C.
#[derive(Default)]
pub struct haven_config_t {
    id: Option<u64>,
    listen: Option<SocketAddr>,
    peers: Option<BTreeMap<NodeId, String>>,
    data_dir: Option<PathBuf>,
    secret: Option<Secret>,
    cluster_id: Option<u64>,
    join: Option<bool>,
    tick_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    lease_reads: Option<bool>,
    snapshot_entries: Option<u64>,
    snapshot_trailing_entries: Option<u64>,
    state_cache_bytes: Option<u64>,
    wal_segment_bytes: Option<u64>,
    wal_cache_bytes: Option<u64>,
    request_timeout_ms: Option<u64>,
    serve_clients: Option<bool>,
    read_mode: Option<ReadMode>,
    client_secret: Option<Secret>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

enum Secret {
    Text(String),
    File(PathBuf),
}

/// The secret as `--secret-file` reads it: a trailing newline is ignored.
fn secret_from_text(what: &str, text: &[u8]) -> Result<ClusterSecret> {
    let mut bytes = text.to_vec();
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    ClusterSecret::new(bytes).map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))
}

fn parse_u64(key: &str, value: &str) -> Result<u64> {
    value.trim().parse().map_err(|_| {
        Error::InvalidArgument(format!("config {key}: {value:?} is not a whole number"))
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::InvalidArgument(format!(
            "config {key}: {value:?} is not true or false"
        ))),
    }
}

/// A file's path (not read until `haven_open`).
fn path(key: &str, value: &str) -> Result<PathBuf> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("config {key}: empty")));
    }
    Ok(PathBuf::from(value))
}

/// A secret given as text or as a file, as `--secret-file` reads it.
fn read_secret(what: &str, secret: &Secret) -> Result<ClusterSecret> {
    match secret {
        Secret::Text(text) => secret_from_text(&format!("config {what}"), text.as_bytes()),
        Secret::File(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                Error::io(format!("reading config {what}_file {}", path.display()), e)
            })?;
            secret_from_text(&format!("config {what}_file"), &bytes)
        }
    }
}

/// `1=host:port,2=host:port`, as `haven serve --peers` takes it.
fn parse_peers(value: &str) -> Result<BTreeMap<NodeId, String>> {
    let bad = |m: String| Error::InvalidArgument(format!("config peers: {m}"));
    let mut peers = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("{item:?} is not ID=HOST:PORT")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad(format!("{id:?} is not a node id")))?;
        if peers
            .insert(NodeId(id), address.trim().to_string())
            .is_some()
        {
            return Err(bad(format!("node id {id} is listed twice")));
        }
    }
    if peers.is_empty() {
        return Err(bad("no member listed".into()));
    }
    Ok(peers)
}

impl haven_config_t {
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "id" => self.id = Some(parse_u64(key, value)?),
            "listen" => {
                let addr = crate::net::resolve_address(value.trim())
                    .map_err(|e| Error::InvalidArgument(format!("config listen: {e}")))?;
                self.listen = Some(addr);
            }
            "peers" => self.peers = Some(parse_peers(value)?),
            "data_dir" => {
                if value.is_empty() {
                    return Err(Error::InvalidArgument("config data_dir: empty".into()));
                }
                self.data_dir = Some(PathBuf::from(value));
            }
            "secret" => {
                secret_from_text("config secret", value.as_bytes())?;
                self.secret = Some(Secret::Text(value.to_string()));
            }
            "secret_file" => self.secret = Some(Secret::File(path(key, value)?)),
            "client_secret" => {
                secret_from_text("config client_secret", value.as_bytes())?;
                self.client_secret = Some(Secret::Text(value.to_string()));
            }
            "client_secret_file" => self.client_secret = Some(Secret::File(path(key, value)?)),
            "tls_cert" => self.tls_cert = Some(path(key, value)?),
            "tls_key" => self.tls_key = Some(path(key, value)?),
            "tls_ca" => self.tls_ca = Some(path(key, value)?),
            "client_ca" => self.client_ca = Some(path(key, value)?),
            "cluster_id" => self.cluster_id = Some(parse_u64(key, value)?),
            "join" => self.join = Some(parse_bool(key, value)?),
            "tick_ms" => self.tick_ms = Some(parse_u64(key, value)?),
            "election_timeout_ms" => self.election_timeout_ms = Some(parse_u64(key, value)?),
            "heartbeat_interval_ms" => self.heartbeat_interval_ms = Some(parse_u64(key, value)?),
            "lease_reads" => self.lease_reads = Some(parse_bool(key, value)?),
            "snapshot_entries" => self.snapshot_entries = Some(parse_u64(key, value)?),
            "snapshot_trailing_entries" => {
                self.snapshot_trailing_entries = Some(parse_u64(key, value)?)
            }
            "state_cache_bytes" => self.state_cache_bytes = Some(parse_u64(key, value)?),
            "wal_segment_bytes" => self.wal_segment_bytes = Some(parse_u64(key, value)?),
            "wal_cache_bytes" => self.wal_cache_bytes = Some(parse_u64(key, value)?),
            "request_timeout_ms" => self.request_timeout_ms = Some(parse_u64(key, value)?),
            "serve_clients" => self.serve_clients = Some(parse_bool(key, value)?),
            "read_mode" => {
                self.read_mode = Some(match value.trim() {
                    "linearizable" => ReadMode::Linearizable,
                    "stale" => ReadMode::Stale,
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "config read_mode: {value:?} is not linearizable or stale"
                        )))
                    }
                })
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "config: unknown key {key:?}"
                )))
            }
        }
        Ok(())
    }

    /// The member's configuration; `Node::open` validates the rest.
    fn build(&self) -> Result<Config> {
        let missing = |key: &str| Error::InvalidArgument(format!("config {key}: not set"));
        let secret = read_secret(
            "secret",
            self.secret.as_ref().ok_or_else(|| missing("secret"))?,
        )?;
        let client_secret = self
            .client_secret
            .as_ref()
            .map(|s| read_secret("client_secret", s))
            .transpose()?;
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(MemberTls::from_files(
                cert,
                key,
                ca,
                self.client_ca.as_deref(),
            )?),
            (None, None, None) if self.client_ca.is_none() => None,
            _ => {
                return Err(Error::InvalidArgument(
                    "config tls_cert, tls_key and tls_ca go together (client_ca needs them)".into(),
                ))
            }
        };
        let mut config = Config::new(
            NodeId(self.id.ok_or_else(|| missing("id"))?),
            ClusterId(self.cluster_id.unwrap_or(1)),
            self.data_dir.clone().ok_or_else(|| missing("data_dir"))?,
            self.listen.ok_or_else(|| missing("listen"))?,
            self.peers.clone().ok_or_else(|| missing("peers"))?,
            secret,
        );
        let set = |target: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *target = v;
            }
        };
        set(&mut config.tick_ms, self.tick_ms);
        set(&mut config.election_timeout_ms, self.election_timeout_ms);
        set(
            &mut config.heartbeat_interval_ms,
            self.heartbeat_interval_ms,
        );
        set(&mut config.snapshot_entries, self.snapshot_entries);
        set(
            &mut config.snapshot_trailing_entries,
            self.snapshot_trailing_entries,
        );
        set(&mut config.state_cache_bytes, self.state_cache_bytes);
        set(&mut config.wal_segment_bytes, self.wal_segment_bytes);
        set(&mut config.request_timeout_ms, self.request_timeout_ms);
        if let Some(bytes) = self.wal_cache_bytes {
            config.wal_cache_bytes = usize::try_from(bytes)
                .map_err(|_| Error::InvalidArgument("config wal_cache_bytes: too large".into()))?;
        }
        config.client_secret = client_secret;
        config.tls = tls;
        config.join = self.join.unwrap_or(config.join);
        config.lease_reads = self.lease_reads.unwrap_or(config.lease_reads);
        config.serve_clients = self.serve_clients.unwrap_or(config.serve_clients);
        Ok(config)
    }
}

/// A new, empty member configuration in `*out` (free it with `haven_config_free`).
///
/// Errors: INVALID_ARGUMENT (`out` NULL). Does not block. The configuration belongs to the
/// caller; it is not thread safe (set it from one thread), `haven_open` only reads it.
#[no_mangle]
pub extern "C" fn haven_config_new(out: *mut *mut haven_config_t) -> c_int {
    entry("haven_config_new", || {
        let out = args::out("out", out)?;
        *out = Box::into_raw(Box::<haven_config_t>::default());
        Ok(())
    })
}

/// Set one setting of `cfg` from text. Keys: `id`, `listen` (HOST:PORT), `peers`
/// (`1=host:port,2=host:port`, every founding member, this one included), `data_dir`,
/// `secret` (the text of the cluster's secret file) or `secret_file` (its path), `cluster_id`
/// (default 1), `join`, `tick_ms`, `election_timeout_ms`, `heartbeat_interval_ms`,
/// `lease_reads`, `snapshot_entries`, `snapshot_trailing_entries`, `state_cache_bytes`,
/// `wal_segment_bytes`, `wal_cache_bytes`, `request_timeout_ms`, `serve_clients`, `read_mode`
/// (`linearizable` or `stale`: how `haven_get`/`haven_scan` read), `client_secret` /
/// `client_secret_file` (the secret remote clients prove; default: the member secret), and
/// TLS on every connection: `tls_cert`, `tls_key`, `tls_ca` (paths of PEM files: this member's
/// certificate chain and key, the CA that signs every member's certificate; all three or
/// none) and `client_ca` (the CA of client certificates: clients must then present one).
/// Booleans are `true`/`false` or `1`/`0`. Files are read by `haven_open`.
///
/// `key` and `value` are borrowed for the call (copied). Errors: INVALID_ARGUMENT naming the
/// key for an unknown key or a bad value, and then `cfg` is unchanged. Does not block; not
/// thread safe for one `cfg`.
#[no_mangle]
pub extern "C" fn haven_config_set(
    cfg: *mut haven_config_t,
    key: *const c_char,
    value: *const c_char,
) -> c_int {
    entry("haven_config_set", || {
        let cfg = args::out("cfg", cfg)?;
        let key = text("key", key)?;
        let value = text("value", value)?;
        cfg.set(key, value)
    })
}

/// Free a configuration (NULL is ignored). Handles opened from it are not affected.
#[no_mangle]
pub extern "C" fn haven_config_free(cfg: *mut haven_config_t) {
    let _ = entry("haven_config_free", || {
        if !cfg.is_null() {
            // SAFETY: `cfg` came from haven_config_new and is freed once (the caller's contract).
            drop(unsafe { Box::from_raw(cfg) });
        }
        Ok(())
    });
}

/// Become a member in this process: open the data directory, start the member's threads and
/// its listener, and put a handle through it in `*out` (close it with `haven_close`).
///
/// `cfg` is only read (it may be freed or reused right after). Blocks while the data
/// directory is opened and the log replayed (it does not wait for a leader). Errors:
/// INVALID_ARGUMENT (a missing or bad setting, named), DATA_DIR (locked, or another node's or
/// cluster's), CORRUPT, UNSUPPORTED_VERSION, IO. On error `*out` is not written. Thread safe.
#[no_mangle]
pub extern "C" fn haven_open(cfg: *const haven_config_t, out: *mut *mut haven_t) -> c_int {
    entry("haven_open", || {
        // SAFETY: NULL or a live configuration from haven_config_new.
        let cfg =
            unsafe { cfg.as_ref() }.ok_or_else(|| Error::InvalidArgument("cfg is NULL".into()))?;
        let out = args::out("out", out)?;
        let config = cfg.build()?;
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let node = Node::open(config)?;
        let client = node.client_with(ClientOptions {
            request_timeout,
            read_mode: cfg.read_mode.unwrap_or_default(),
            ..ClientOptions::default()
        });
        *out = Box::into_raw(Box::new(haven_t {
            client,
            node: Some(node),
        }));
        Ok(())
    })
}

/// Options of a remote client, for `haven_connect_with`. Initialise with `haven_options_init`
/// (which sets `struct_size`, so fields can be appended in later versions), then change fields.
#[repr(C)]
pub struct haven_options_t {
    /// `sizeof(haven_options_t)` as the caller was compiled with (set by `haven_options_init`).
    pub struct_size: usize,
    /// The cluster's id (default 1).
    pub cluster_id: u64,
    /// Deadline of each operation, retries included (default 5000).
    pub request_timeout_ms: u64,
    /// How long one connect and handshake may take (default 1000).
    pub connect_timeout_ms: u64,
    /// `HAVEN_READ_LINEARIZABLE` (default) or `HAVEN_READ_STALE`: how `haven_get` and
    /// `haven_scan` read.
    pub read_mode: c_int,
    /// Non-zero (default): connect to the leader when a member names it.
    pub prefer_leader: c_int,
    /// TLS: path of the PEM file of the CA that signed the members' certificates (NULL,
    /// default: plaintext). Borrowed for the `haven_connect_with` call.
    pub tls_ca: *const c_char,
    /// TLS: path of this client's PEM certificate chain, when members require client
    /// certificates (NULL: none). Needs `tls_key` and `tls_ca`.
    pub tls_cert: *const c_char,
    /// TLS: path of this client's PEM private key (NULL: none). Needs `tls_cert`.
    pub tls_key: *const c_char,
}

/// `struct_size` of the first `haven_options_t` (before the TLS fields): a caller compiled
/// against that header is still accepted, its TLS fields read as NULL.
const OPTIONS_V1_SIZE: usize = std::mem::offset_of!(haven_options_t, tls_ca);

impl haven_options_t {
    fn defaults() -> haven_options_t {
        let defaults = ClientOptions::default();
        haven_options_t {
            struct_size: std::mem::size_of::<haven_options_t>(),
            cluster_id: 1,
            request_timeout_ms: defaults.request_timeout.as_millis() as u64,
            connect_timeout_ms: defaults.connect_timeout.as_millis() as u64,
            read_mode: HAVEN_READ_LINEARIZABLE,
            prefer_leader: 1,
            tls_ca: std::ptr::null(),
            tls_cert: std::ptr::null(),
            tls_key: std::ptr::null(),
        }
    }

    /// The client's TLS settings.
    fn tls(&self) -> Result<Option<ClientTls>> {
        let optional = |name: &str, p: *const c_char| -> Result<Option<PathBuf>> {
            if p.is_null() {
                Ok(None)
            } else {
                Ok(Some(PathBuf::from(text(name, p)?)))
            }
        };
        let ca = optional("opts->tls_ca", self.tls_ca)?;
        let cert = optional("opts->tls_cert", self.tls_cert)?;
        let key = optional("opts->tls_key", self.tls_key)?;
        match ca {
            Some(ca) => Ok(Some(ClientTls::from_files(
                &ca,
                cert.as_deref(),
                key.as_deref(),
            )?)),
            None if cert.is_some() || key.is_some() => Err(Error::InvalidArgument(
                "opts->tls_cert/tls_key need opts->tls_ca (the CA of the members' certificates)"
                    .into(),
            )),
            None => Ok(None),
        }
    }
}

/// Fill `*opts` with the defaults. Errors: INVALID_ARGUMENT (`opts` NULL).
#[no_mangle]
pub extern "C" fn haven_options_init(opts: *mut haven_options_t) -> c_int {
    entry("haven_options_init", || {
        *args::out("opts", opts)? = haven_options_t::defaults();
        Ok(())
    })
}

fn connect(
    addrs: *const c_char,
    secret: *const c_char,
    options: &haven_options_t,
    out: *mut *mut haven_t,
) -> Result<()> {
    let addrs = text("addrs", addrs)?;
    let secret = text("secret", secret)?;
    let out = args::out("out", out)?;
    let members: Vec<&str> = addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if members.is_empty() {
        return Err(Error::InvalidArgument(
            "addrs: no member address (expected \"host:port,host:port\")".into(),
        ));
    }
    let secret = secret_from_text("secret", secret.as_bytes())?;
    let client_options = ClientOptions {
        request_timeout: Duration::from_millis(options.request_timeout_ms),
        connect_timeout: Duration::from_millis(options.connect_timeout_ms),
        read_mode: read_mode("read_mode", options.read_mode)?,
        prefer_leader: options.prefer_leader != 0,
        tls: options.tls()?,
    };
    let client = Client::connect(
        &members,
        ClusterId(options.cluster_id),
        &secret,
        client_options,
    )?;
    *out = Box::into_raw(Box::new(haven_t { client, node: None }));
    Ok(())
}

/// Connect to a cluster as a remote client through any of `addrs` (`"host:port,host:port"`),
/// proving knowledge of `secret` (the text of the cluster's secret file, as `--secret-file`
/// reads it: a trailing newline is ignored), cluster id 1, default options. Puts the handle in
/// `*out` (close it with `haven_close`).
///
/// Inputs are borrowed for the call. Blocks until a member answers or every address failed.
/// Errors: INVALID_ARGUMENT (NULL, bad UTF-8, no address, a secret of the wrong size), AUTH
/// (a member refused the secret or cluster id), UNAVAILABLE (no member reachable). On error
/// `*out` is not written. Thread safe.
#[no_mangle]
pub extern "C" fn haven_connect(
    addrs: *const c_char,
    secret: *const c_char,
    out: *mut *mut haven_t,
) -> c_int {
    entry("haven_connect", || {
        connect(addrs, secret, &haven_options_t::defaults(), out)
    })
}

/// `haven_connect` with options (cluster id, timeouts, read mode, TLS). `opts` and the
/// strings it points to are borrowed for the call; its `struct_size` must be set (by
/// `haven_options_init`). TLS files are read here: an unreadable one is IO, a bad one
/// INVALID_ARGUMENT; a member without TLS (or with it, when `tls_ca` is NULL) refuses with AUTH. Same blocking, errors
/// and thread safety as `haven_connect`.
#[no_mangle]
pub extern "C" fn haven_connect_with(
    addrs: *const c_char,
    secret: *const c_char,
    opts: *const haven_options_t,
    out: *mut *mut haven_t,
) -> c_int {
    entry("haven_connect_with", || {
        if opts.is_null() {
            return Err(Error::InvalidArgument("opts is NULL".into()));
        }
        // SAFETY: a valid haven_options_t of the caller's header, which starts with
        // struct_size in every version.
        let given = unsafe { std::ptr::addr_of!((*opts).struct_size).read() };
        if given < OPTIONS_V1_SIZE {
            return Err(Error::InvalidArgument(format!(
                "opts: struct_size is {}, expected at least {OPTIONS_V1_SIZE} (call \
                 haven_options_init first)",
                given,
            )));
        }
        // Copy what the caller's version of the struct has; fields it lacks keep their
        // defaults (NULL for the TLS paths).
        let mut options = haven_options_t::defaults();
        let size = given.min(std::mem::size_of::<haven_options_t>());
        // SAFETY: the caller's struct is `given` bytes (its contract); at most
        // size_of::<haven_options_t>() of them are copied into `options`, a plain-old-data
        // repr(C) struct of that size.
        unsafe {
            std::ptr::copy_nonoverlapping(
                opts.cast::<u8>(),
                std::ptr::addr_of_mut!(options).cast::<u8>(),
                size,
            );
        }
        options.struct_size = std::mem::size_of::<haven_options_t>();
        connect(addrs, secret, &options, out)
    })
}

/// Close a handle (NULL is ignored): a member hands off leadership if it leads, finishes the
/// writes in flight and stops every thread and file; a remote client closes its connection.
///
/// Blocks until that is done. No other call may be running on `h` or follow it: `h` is freed.
/// A shutdown failure (the member had already stopped on a storage failure) is reported by
/// `haven_close_status`, not here.
#[no_mangle]
pub extern "C" fn haven_close(h: *mut haven_t) {
    let _ = haven_close_status(h);
}

/// `haven_close` that reports how the member stopped: FATAL when a storage failure had
/// stopped it, else OK. Same contract as `haven_close`; `h` is freed either way.
#[no_mangle]
pub extern "C" fn haven_close_status(h: *mut haven_t) -> c_int {
    entry("haven_close", || {
        if h.is_null() {
            return Ok(());
        }
        // SAFETY: `h` came from haven_open/haven_connect and this is its last use (contract).
        let handle = unsafe { Box::from_raw(h) };
        let haven_t { client, node } = *handle;
        drop(client);
        match node {
            Some(node) => node.shutdown(),
            None => Ok(()),
        }
    })
}

/// The address the member behind `h` listens on (`"127.0.0.1:7001"`, with the real port when
/// it was configured as 0), in `*out` (free with `haven_buf_free`; not NUL-terminated).
/// Errors: INVALID_ARGUMENT (NULL, or `h` is a remote client). Does not block; thread safe.
#[no_mangle]
pub extern "C" fn haven_local_addr(h: *const haven_t, out: *mut super::haven_buf_t) -> c_int {
    entry("haven_local_addr", || {
        let h = args::handle(h)?;
        let out = args::out("out", out)?;
        let node = h.node().ok_or_else(|| {
            Error::InvalidArgument("the handle is a remote client, not a member".into())
        })?;
        *out = super::haven_buf_t::from_vec(node.local_addr().to_string().into_bytes());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_and_bad_value_are_named_and_change_nothing() {
        let mut cfg = haven_config_t::default();
        let e = cfg.set("colour", "blue").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = cfg.set("id", "one").unwrap_err();
        assert!(e.to_string().contains("config id"), "{e}");
        assert!(cfg.id.is_none());
        cfg.set("id", "3").unwrap();
        assert_eq!(cfg.id, Some(3));
    }

    #[test]
    fn a_missing_setting_is_named_at_open() {
        let mut cfg = haven_config_t::default();
        cfg.set("id", "1").unwrap();
        cfg.set("secret", "sixteen or more bytes\n").unwrap();
        let e = cfg.build().unwrap_err();
        assert!(e.to_string().contains("data_dir"), "{e}");
    }
}
