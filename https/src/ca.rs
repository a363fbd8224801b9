//! A small certificate authority for Palisade's own TLS: gateway serving certificates and the
//! admission webhook's certificate. What is kept (the current CA and the bundle clients trust)
//! and how it rotates is decided here ([`CaState`]); where it is kept (a Secret) is the
//! caller's I/O.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("stored certificate is not valid PEM/X.509: {0}")]
    Parse(String),
}

/// A CA certificate and key, able to issue leaf certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A leaf certificate and its key, PEM encoded.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

fn validity(lifetime: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    // Backdate a little for clock skew between nodes.
    (now - time::Duration::minutes(5), now + lifetime)
}

pub const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86400)
}

impl Authority {
    pub fn generate(common_name: &str, lifetime: Duration) -> Result<Authority, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "Palisade");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(lifetime);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Authority { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Authority { issuer, cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string() })
    }

    /// A TLS server certificate for `dns_names` (the first is also the Common Name).
    pub fn issue_server(
        &self,
        dns_names: &[String],
        lifetime: Duration,
    ) -> Result<Leaf, CertError> {
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        if let Some(first) = dns_names.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        (params.not_before, params.not_after) = validity(lifetime);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// What a stored certificate looks like, for rotation decisions.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DNS and IP subject alternative names.
    pub dns_names: Vec<String>,
}

pub fn inspect(cert_pem: &str) -> Result<CertInfo, CertError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| CertError::Parse(e.to_string()))?;
    let not_after = cert.validity().not_after.to_datetime();
    let not_before = cert.validity().not_before.to_datetime();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        _ => None,
                    };
                    dns_names.extend(ip);
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo { not_before, not_after, dns_names })
}

/// Whether `leaf_pem` was issued by `ca_pem`: same issuer name, and the leaf's authority key
/// identifier is the CA's subject key identifier (distinct CAs have distinct keys).
pub fn issued_by(leaf_pem: &str, ca_pem: &str) -> bool {
    let parse = |pem: &str| x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok().map(|(_, p)| p);
    let (Some(leaf), Some(ca)) = (parse(leaf_pem), parse(ca_pem)) else { return false };
    let (Ok(leaf), Ok(ca)) = (leaf.parse_x509(), ca.parse_x509()) else { return false };
    let aki = leaf.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
            a.key_identifier.as_ref().map(|k| k.0.to_vec())
        }
        _ => None,
    });
    let ski = ca.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    });
    leaf.issuer() == ca.subject() && aki.is_some() && aki == ski
}

/// Whether a stored leaf must be reissued: unparsable, expiring within `margin`, or not
/// covering every required name.
pub fn needs_rotation(cert_pem: &str, required: &[String], margin: Duration) -> bool {
    match inspect(cert_pem) {
        Err(_) => true,
        Ok(info) => {
            let deadline = OffsetDateTime::now_utc() + margin;
            info.not_after <= deadline || required.iter().any(|n| !info.dns_names.contains(n))
        }
    }
}

/// The CA as it is kept: the current authority, and the PEM bundle clients trust (every CA
/// whose certificates may still be in use: the current one and, after a rotation, the previous
/// one until it expires). A rotation never breaks a handshake: the bundle names the new CA
/// before it issues anything.
pub struct CaState {
    pub authority: Authority,
    pub bundle: String,
}

/// Where each part is stored (the keys of a `kubernetes.io/tls` Secret, plus the bundle).
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const BUNDLE_KEY: &str = "ca-bundle.crt";

/// The name Palisade's CA certificates carry.
const CA_NAME: &str = "palisade-ca";

impl CaState {
    /// A new CA, trusted alone.
    pub fn generate(lifetime: Duration) -> Result<CaState, CertError> {
        let authority = Authority::generate(CA_NAME, lifetime)?;
        let bundle = authority.cert_pem.trim().to_string() + "\n";
        Ok(CaState { authority, bundle })
    }

    /// The CA as stored; an empty bundle means the current CA alone.
    pub fn from_stored(cert_pem: &str, key_pem: &str, bundle: &str) -> Result<CaState, CertError> {
        let authority = Authority::from_pem(cert_pem, key_pem)?;
        let bundle =
            if bundle.trim().is_empty() { authority.cert_pem.clone() } else { bundle.to_string() };
        Ok(CaState { authority, bundle })
    }

    /// Whether less than `renew_before` of the CA's life remains (or it cannot be read).
    pub fn expiring(&self, renew_before: Duration) -> bool {
        inspect(&self.authority.cert_pem)
            .map(|i| i.not_after <= OffsetDateTime::now_utc() + renew_before)
            .unwrap_or(true)
    }

    /// The next CA: a new authority first in the bundle, the old ones kept while they are valid.
    pub fn rotated(&self, lifetime: Duration) -> Result<CaState, CertError> {
        let next = Authority::generate(CA_NAME, lifetime)?;
        let mut certs = vec![next.cert_pem.trim().to_string()];
        certs.extend(
            live_certs(&self.bundle).into_iter().filter(|c| c.trim() != next.cert_pem.trim()),
        );
        Ok(CaState { authority: next, bundle: certs.join("\n") + "\n" })
    }

    /// What to store, by key.
    pub fn stored(&self) -> [(&'static str, &str); 3] {
        [
            (CERT_KEY, self.authority.cert_pem.as_str()),
            (KEY_KEY, self.authority.key_pem.as_str()),
            (BUNDLE_KEY, self.bundle.as_str()),
        ]
    }
}

/// PEM blocks of a bundle, dropping certificates that expired.
pub fn live_certs(bundle: &str) -> Vec<String> {
    let now = OffsetDateTime::now_utc();
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("-----BEGIN CERTIFICATE-----"))
        .filter(|c| inspect(c).is_ok_and(|i| i.not_after > now))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_leaves_that_rotate_when_due() {
        let ca = Authority::generate("palisade-test-ca", days(365)).unwrap();
        let names = vec![
            "svc.ns.svc".to_string(),
            "svc.ns.svc.cluster.local".to_string(),
            "127.0.0.1".to_string(),
        ];
        let leaf = ca.issue_server(&names, days(90)).unwrap();
        let info = inspect(&leaf.cert_pem).unwrap();
        assert_eq!(info.dns_names, names);
        assert!(!needs_rotation(&leaf.cert_pem, &names, Duration::from_secs(30 * 86400)));
        assert!(
            needs_rotation(&leaf.cert_pem, &names, Duration::from_secs(91 * 86400)),
            "expiring"
        );
        assert!(
            needs_rotation(&leaf.cert_pem, &["other.ns.svc".to_string()], Duration::ZERO),
            "wrong names"
        );
        assert!(needs_rotation("garbage", &names, Duration::ZERO));
        // A CA reloaded from its PEM still issues, and its leaves chain to it.
        let again = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let second = again.issue_server(&names, days(1)).unwrap();
        assert!(issued_by(&second.cert_pem, &ca.cert_pem));
        assert!(issued_by(&leaf.cert_pem, &ca.cert_pem));
        let other = Authority::generate("palisade-test-ca", days(365)).unwrap();
        assert!(!issued_by(&leaf.cert_pem, &other.cert_pem), "same name, different key");
        assert!(!issued_by("garbage", &ca.cert_pem));
    }

    #[test]
    fn expired_certificates_leave_the_bundle() {
        let live = Authority::generate("live", Duration::from_secs(3600)).unwrap();
        let expired = Authority::generate("expired", Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let bundle = format!("{}\n{}", live.cert_pem, expired.cert_pem);
        let kept = live_certs(&bundle);
        assert_eq!(kept, vec![live.cert_pem.trim().to_string()]);
    }

    #[test]
    fn a_rotation_trusts_the_new_ca_first_and_keeps_the_old_one() {
        let first = CaState::generate(days(10)).unwrap();
        assert!(!first.expiring(Duration::from_secs(86400)));
        assert!(first.expiring(days(11)));
        let second = first.rotated(days(10)).unwrap();
        let certs = live_certs(&second.bundle);
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0], second.authority.cert_pem.trim());
        assert_eq!(certs[1], first.authority.cert_pem.trim());
        let stored = second.stored();
        let back = CaState::from_stored(stored[0].1, stored[1].1, stored[2].1).unwrap();
        assert_eq!(back.bundle, second.bundle);
        let alone = CaState::from_stored(stored[0].1, stored[1].1, " ").unwrap();
        assert_eq!(alone.bundle, second.authority.cert_pem);
    }
}
