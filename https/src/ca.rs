//! A small certificate authority for Palisade's own TLS: gateway serving certificates and the
//! admission webhook's certificate (the CA itself is kept in a Secret by its users).

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
}
