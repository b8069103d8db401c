//! `rankctl certs generate`: a private CA and certificates signed by it, for development
//! clusters and tests. Production clusters should use their own PKI (cert-manager, Vault,
//! ...); rankd only needs PEM files and reloads them when they change.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

#[derive(clap::Subcommand)]
pub enum CertsCommand {
    /// Write ca.crt/ca.key and, for each --name, NAME.crt/NAME.key signed by the CA (the
    /// CA is reused when ca.crt and ca.key already exist in --out).
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// Subject common names, comma separated: node names, or operator identities for
        /// auth.identities.
        #[arg(long, value_delimiter = ',')]
        name: Vec<String>,
        /// Hosts every certificate is valid for (DNS names or IP addresses).
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
    },
}

pub fn run(cmd: CertsCommand) -> Result<()> {
    let CertsCommand::Generate { out, name, hosts } = cmd;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let ca = load_or_create_ca(&out)?;
    for n in &name {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, n.as_str());
        for h in &hosts {
            params
                .subject_alt_names
                .push(match h.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(h.as_str().try_into()?),
                });
        }
        let cert = params.signed_by(&key, &ca)?;
        write(&out.join(format!("{n}.crt")), &cert.pem(), false)?;
        write(&out.join(format!("{n}.key")), &key.serialize_pem(), true)?;
    }
    if crate::format::json_output() {
        return crate::format::print_json(&serde_json::json!({"dir": out, "names": name}));
    }
    println!(
        "wrote ca.crt and {} certificate(s) in {}",
        name.len(),
        out.display()
    );
    Ok(())
}

fn load_or_create_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert_path.exists() && key_path.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)?;
        return Ok(Issuer::from_ca_cert_pem(
            &std::fs::read_to_string(&cert_path)?,
            key,
        )?);
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "rankd development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    write(&cert_path, &cert.pem(), false)?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok(Issuer::new(params, key))
}

/// Keys are written mode 0600.
fn write(path: &Path, pem: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    Ok(())
}
