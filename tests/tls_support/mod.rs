//! Certificates for the TLS tests, made with rcgen at test time: a CA, member certificates
//! (valid for 127.0.0.1 and localhost, server and client use) and client certificates.
//!
//! Include with `#[path = "tls_support/mod.rs"] mod tls_support;`.
#![allow(dead_code)] // each test binary uses a different part

use haven::net::{ClientTls, MemberTls};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, both PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority that signs members' and clients' certificates.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    fn sign(
        &self,
        name: &str,
        sans: &[&str],
        usages: Vec<ExtendedKeyUsagePurpose>,
        expired: bool,
    ) -> Identity {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed leaf");
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A member's certificate: for 127.0.0.1 and localhost, server and client use.
    pub fn member(&self, id: u64) -> Identity {
        self.sign(
            &format!("haven member {id}"),
            &["127.0.0.1", "localhost"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            false,
        )
    }

    /// A client's certificate (client use only).
    pub fn client(&self, name: &str) -> Identity {
        self.sign(name, &[], vec![ExtendedKeyUsagePurpose::ClientAuth], false)
    }

    /// A client's certificate that expired in 2021.
    pub fn expired_client(&self, name: &str) -> Identity {
        self.sign(name, &[], vec![ExtendedKeyUsagePurpose::ClientAuth], true)
    }
}

/// Member `id`'s TLS settings, its certificate signed by `ca`.
pub fn member_tls(ca: &Ca, id: u64, client_ca: Option<&Ca>) -> MemberTls {
    let identity = ca.member(id);
    MemberTls::from_pem(
        identity.cert_pem.as_bytes(),
        identity.key_pem.as_bytes(),
        ca.pem.as_bytes(),
        client_ca.map(|c| c.pem.as_bytes()),
    )
    .expect("member TLS")
}

/// A client's TLS settings: trusts `ca`, presents `identity` if given.
pub fn client_tls(ca: &Ca, identity: Option<&Identity>) -> ClientTls {
    ClientTls::from_pem(
        ca.pem.as_bytes(),
        identity.map(|i| (i.cert_pem.as_bytes(), i.key_pem.as_bytes())),
    )
    .expect("client TLS")
}
