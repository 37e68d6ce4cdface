//! The client commands: `haven put | get | del | cas | scan`, over the remote [`Client`].
//!
//! Exit codes and the one stderr line of a failure are shared by every command: see
//! [`super::exit`].

use super::exit::{fail, report, Outcome, EXIT_NO};
use haven::net::{ClientTls, ClusterSecret};
use haven::sm::{prefix_end, CasResult};
use haven::{Client, ClientOptions, ClusterId, Error, Result};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the cluster (the names `haven serve` uses for the same things).
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Members to contact, HOST:PORT, comma separated (any of them will do: the client finds
    /// the leader and fails over to the others).
    #[arg(long, value_name = "HOST:PORT,...")]
    pub cluster: String,
    /// File holding the client secret (the members' --client-secret-file; the member secret
    /// where none is set). 16 to 1024 bytes; a trailing newline is ignored.
    #[arg(long)]
    pub secret_file: PathBuf,
    /// Connect with TLS, trusting the CA in this PEM file (the members' --tls-ca).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for members started with --client-ca.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's id.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// Deadline of the operation in milliseconds, retries across leader changes included.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

impl ClusterArgs {
    /// The member addresses, trimmed, without empty items.
    pub fn addresses(&self) -> Result<Vec<String>> {
        let addrs: Vec<String> = self
            .cluster
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            return Err(Error::InvalidArgument("--cluster: no member listed".into()));
        }
        Ok(addrs)
    }

    /// The secret from `--secret-file`.
    pub fn secret(&self) -> Result<ClusterSecret> {
        super::serve::read_secret(&self.secret_file)
    }

    /// The options of the clients this command makes.
    pub fn options(&self) -> Result<ClientOptions> {
        if self.timeout_ms == 0 || self.timeout_ms > haven::node::MAX_REQUEST_TIMEOUT_MS {
            return Err(Error::InvalidArgument(format!(
                "--timeout-ms must be 1 to {}",
                haven::node::MAX_REQUEST_TIMEOUT_MS
            )));
        }
        let request_timeout = Duration::from_millis(self.timeout_ms);
        let tls = match &self.tls_ca {
            Some(ca) => Some(ClientTls::from_files(
                ca,
                self.tls_cert.as_deref(),
                self.tls_key.as_deref(),
            )?),
            None if self.tls_cert.is_some() => {
                return Err(Error::InvalidArgument(
                    "--tls-cert needs --tls-ca (the CA of the members' certificates)".into(),
                ))
            }
            None => None,
        };
        Ok(ClientOptions {
            request_timeout,
            connect_timeout: request_timeout.min(Duration::from_secs(1)),
            tls,
            ..ClientOptions::default()
        })
    }

    /// A client for the cluster (fails with `Auth` at once for a wrong secret or cluster id).
    pub fn connect(&self) -> Result<Client> {
        let addrs = self.addresses()?;
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        Client::connect(
            &refs,
            ClusterId(self.cluster_id),
            &self.secret()?,
            self.options()?,
        )
    }
}

/// The options every data command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Keys and values are hex on the command line and in the output (for binary data).
    #[arg(long)]
    pub hex: bool,
}

/// `haven put`.
#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// The key.
    pub key: String,
    /// The value (omit it with --stdin).
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    pub value: Option<String>,
    /// Read the value from standard input, as is (with --hex: hex text; surrounding whitespace
    /// ignored). For values too large for the command line.
    #[arg(long)]
    pub stdin: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

/// `haven get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The key.
    pub key: String,
    #[command(flatten)]
    pub data: DataArgs,
}

/// `haven del`.
#[derive(clap::Args, Debug)]
pub struct DelArgs {
    /// The key.
    pub key: String,
    #[command(flatten)]
    pub data: DataArgs,
}

/// `haven cas`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("comparison").required(true).args(["expect", "expect_absent"])))]
pub struct CasArgs {
    /// The key.
    pub key: String,
    /// The value to store if the comparison holds.
    pub new_value: String,
    /// Swap only if the current value is this.
    #[arg(long)]
    pub expect: Option<String>,
    /// Swap only if the key is absent.
    #[arg(long)]
    pub expect_absent: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

/// `haven scan`.
#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    /// Only keys starting with this (default: every key).
    pub prefix: Option<String>,
    /// Most keys printed.
    #[arg(long, default_value_t = 1000)]
    pub limit: u64,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Decode hex text (either case; an even number of digits).
pub fn from_hex(text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    if text.len() % 2 != 0 {
        return Err(Error::InvalidArgument(format!(
            "{text:?} is not hex: odd number of digits"
        )));
    }
    let digit = |c: u8| -> Result<u8> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(Error::InvalidArgument(format!(
                "{text:?} is not hex: {:?} is not a hex digit",
                c as char
            ))),
        }
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

impl DataArgs {
    fn input(&self, text: &str) -> Result<Vec<u8>> {
        if self.hex {
            from_hex(text)
        } else {
            Ok(text.as_bytes().to_vec())
        }
    }

    /// `bytes` as the output shows them: hex, or as is.
    fn output(&self, bytes: &[u8]) -> Vec<u8> {
        if self.hex {
            to_hex(bytes).into_bytes()
        } else {
            bytes.to_vec()
        }
    }

    /// A key or value for a message on stderr.
    fn show(&self, bytes: &[u8]) -> String {
        if self.hex {
            to_hex(bytes)
        } else {
            format!("{:?}", String::from_utf8_lossy(bytes))
        }
    }
}

fn print_line(bytes: &[u8]) -> Outcome {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| fail(Error::io("writing to stdout", e)))
}

/// `haven put KEY VALUE`: prints nothing on success.
pub fn put(args: &PutArgs) -> Outcome {
    let key = args.data.input(&args.key).map_err(fail)?;
    let value = match &args.value {
        Some(v) => args.data.input(v).map_err(fail)?,
        None => {
            let mut raw = Vec::new();
            std::io::stdin()
                .read_to_end(&mut raw)
                .map_err(|e| fail(Error::io("reading the value from stdin", e)))?;
            if args.data.hex {
                let text = String::from_utf8(raw)
                    .map_err(|_| fail(Error::InvalidArgument("stdin is not hex text".into())))?;
                from_hex(&text).map_err(fail)?
            } else {
                raw
            }
        }
    };
    let client = args.data.cluster.connect().map_err(fail)?;
    client.put(&key, &value).map_err(fail)?;
    Ok(())
}

/// `haven get KEY`: the value and a newline; an absent key is exit 1 with nothing on stdout.
pub fn get(args: &GetArgs) -> Outcome {
    let key = args.data.input(&args.key).map_err(fail)?;
    let client = args.data.cluster.connect().map_err(fail)?;
    match client.get(&key).map_err(fail)? {
        Some(v) => print_line(&args.data.output(&v.value)),
        None => Err((EXIT_NO, format!("key {} not found", args.data.show(&key)))),
    }
}

/// `haven del KEY`: exit 1 if the key was absent (nothing deleted).
pub fn del(args: &DelArgs) -> Outcome {
    let key = args.data.input(&args.key).map_err(fail)?;
    let client = args.data.cluster.connect().map_err(fail)?;
    if client.delete(&key).map_err(fail)?.existed() {
        Ok(())
    } else {
        Err((
            EXIT_NO,
            format!("key {} not found (nothing deleted)", args.data.show(&key)),
        ))
    }
}

/// `haven cas KEY --expect OLD|--expect-absent NEW`: exit 1 if the comparison failed.
pub fn cas(args: &CasArgs) -> Outcome {
    let key = args.data.input(&args.key).map_err(fail)?;
    let new_value = args.data.input(&args.new_value).map_err(fail)?;
    let expected = match &args.expect {
        Some(v) => Some(args.data.input(v).map_err(fail)?),
        None => None,
    };
    let client = args.data.cluster.connect().map_err(fail)?;
    match client
        .compare_and_swap(&key, expected.as_deref(), &new_value)
        .map_err(fail)?
    {
        CasResult::Swapped { .. } => Ok(()),
        CasResult::Failed { current } => Err((
            EXIT_NO,
            match current {
                Some(v) => format!(
                    "compare failed: key {} holds {}",
                    args.data.show(&key),
                    args.data.show(&v.value)
                ),
                None => format!("compare failed: key {} is absent", args.data.show(&key)),
            },
        )),
    }
}

/// `haven scan [PREFIX]`: one `KEY<TAB>VALUE` line per key, in key order, up to `--limit`.
pub fn scan(args: &ScanArgs) -> Outcome {
    if args.limit == 0 {
        return Err(fail(Error::InvalidArgument(
            "--limit must be at least 1".into(),
        )));
    }
    let prefix = match &args.prefix {
        Some(p) => args.data.input(p).map_err(fail)?,
        None => Vec::new(),
    };
    let end = prefix_end(&prefix);
    let client = args.data.cluster.connect().map_err(fail)?;
    let mut out = std::io::stdout().lock();
    let mut start = prefix.clone();
    let mut left = args.limit;
    // Pages of at most MAX_SCAN_LIMIT keys; each page is one linearizable read, so a scan
    // larger than one page is not one snapshot of the state.
    let truncated = loop {
        let page_limit = left.min(haven::limits::MAX_SCAN_LIMIT as u64) as u32;
        let page = client
            .range(&start, end.as_deref(), page_limit)
            .map_err(fail)?;
        for kv in &page.entries {
            let mut line = args.data.output(&kv.key);
            line.push(b'\t');
            line.extend(args.data.output(&kv.value));
            line.push(b'\n');
            out.write_all(&line)
                .map_err(|e| fail(Error::io("writing to stdout", e)))?;
        }
        left -= page.entries.len() as u64;
        match page.entries.last() {
            Some(last) if page.more && left > 0 => {
                start = last.key.clone();
                start.push(0); // the smallest key after the last one
            }
            _ => break page.more && left == 0,
        }
    };
    out.flush()
        .map_err(|e| fail(Error::io("writing to stdout", e)))?;
    if truncated {
        report(
            "scan",
            &format!("more keys follow; stopped at --limit {}", args.limit),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use haven::ErrorCode;

    #[test]
    fn hex_round_trips_and_bad_hex_is_an_invalid_argument() {
        assert_eq!(to_hex(&[0, 0xab, 0x10, 0xff]), "00ab10ff");
        assert_eq!(from_hex("00AB10ff").unwrap(), vec![0, 0xab, 0x10, 0xff]);
        assert_eq!(from_hex("").unwrap(), Vec::<u8>::new());
        assert_eq!(
            from_hex("abc").unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            from_hex("zz").unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
    }
}
