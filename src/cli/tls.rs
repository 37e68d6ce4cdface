//! `haven tls gen`: a member CA, a client CA and their certificates for a test cluster, made
//! with rcgen (ECDSA P-256), so that trying TLS needs no OpenSSL.
//!
//! Files written to `--dir` (keys mode 0600):
//! - `ca.pem`, `ca-key.pem`: the member CA (`--tls-ca` of members and clients);
//! - `member-N.pem`, `member-N-key.pem`: member N's certificate, valid for every `--hosts` name
//!   or IP address, for server and client use (`--tls-cert`, `--tls-key` of `haven serve`);
//! - `client-ca.pem`, `client-ca-key.pem`: the client CA (`--client-ca` of `haven serve`);
//! - `client-N.pem`, `client-N-key.pem`: client certificates (`--tls-cert`, `--tls-key` of the
//!   client commands).

use haven::{Error, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Options of `haven tls gen`.
#[derive(clap::Args, Debug, Clone)]
pub struct TlsGenArgs {
    /// Where to write the files (created if missing; existing files are not overwritten).
    #[arg(long)]
    pub dir: PathBuf,
    /// Member certificates to make (member-1.pem ...).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Client certificates to make (client-1.pem ...).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Names and IP addresses the member certificates are valid for, comma separated: every
    /// address that peers and clients dial (members are dialled by IP address).
    #[arg(long, default_value = "127.0.0.1,::1,localhost")]
    pub hosts: String,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

/// What `haven tls` does.
#[derive(clap::Subcommand, Debug)]
pub enum TlsCommand {
    /// Make a member CA, a client CA, member and client certificates for a test cluster.
    Gen(TlsGenArgs),
}

fn rc(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::InvalidArgument(format!("{what}: {e}"))
}

struct Authority {
    cert: Certificate,
    key: KeyPair,
}

/// Valid from an hour ago (clocks of the machines differ a little) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn authority(name: &str, days: u32) -> Result<Authority> {
    let key = KeyPair::generate().map_err(rc("generating a CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc("CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(rc("signing the CA"))?;
    Ok(Authority { cert, key })
}

fn leaf(
    ca: &Authority,
    name: &str,
    hosts: &[String],
    usages: Vec<ExtendedKeyUsagePurpose>,
    days: u32,
) -> Result<(Certificate, KeyPair)> {
    let key = KeyPair::generate().map_err(rc("generating a key"))?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(rc("--hosts"))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = usages;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .map_err(rc("signing a certificate"))?;
    Ok((cert, key))
}

fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Make the files; returns the names written.
pub fn generate(args: &TlsGenArgs) -> Result<Vec<String>> {
    if args.days == 0 {
        return Err(Error::InvalidArgument("--days must be at least 1".into()));
    }
    let hosts: Vec<String> = args
        .hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    if hosts.is_empty() && args.members > 0 {
        return Err(Error::InvalidArgument("--hosts: no name or address".into()));
    }
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Error::io(format!("creating {}", args.dir.display()), e))?;
    let mut written = Vec::new();
    let mut put = |name: String, text: String, secret: bool| -> Result<()> {
        write(&args.dir, &name, &text, secret)?;
        written.push(name);
        Ok(())
    };
    let member_ca = authority("haven member CA", args.days)?;
    put("ca.pem".into(), member_ca.cert.pem(), false)?;
    put("ca-key.pem".into(), member_ca.key.serialize_pem(), true)?;
    for id in 1..=args.members {
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let name = format!("haven member {id}");
        let (cert, key) = leaf(&member_ca, &name, &hosts, usages, args.days)?;
        put(format!("member-{id}.pem"), cert.pem(), false)?;
        put(format!("member-{id}-key.pem"), key.serialize_pem(), true)?;
    }
    let client_ca = authority("haven client CA", args.days)?;
    put("client-ca.pem".into(), client_ca.cert.pem(), false)?;
    put(
        "client-ca-key.pem".into(),
        client_ca.key.serialize_pem(),
        true,
    )?;
    for id in 1..=args.clients {
        let usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let name = format!("haven client {id}");
        let (cert, key) = leaf(&client_ca, &name, &[], usages, args.days)?;
        put(format!("client-{id}.pem"), cert.pem(), false)?;
        put(format!("client-{id}-key.pem"), key.serialize_pem(), true)?;
    }
    Ok(written)
}

/// Run `haven tls ...`.
pub fn run(command: &TlsCommand) -> Result<()> {
    match command {
        TlsCommand::Gen(args) => {
            for name in generate(args)? {
                println!("{}", args.dir.join(name).display());
            }
            Ok(())
        }
    }
}
