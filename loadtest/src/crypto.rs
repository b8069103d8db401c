//! `rankload crypto`: artifact encryption and decryption throughput on one core, against
//! a bare AES-256-GCM encryption of one buffer of the same size measured in the same run.

use std::io::{Read, Write};
use std::time::Instant;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use anyhow::{ensure, Context, Result};
use clap::Args;
use rankd_artifact::{ArtifactReader, ArtifactWriter, Key, Keyring, DEFAULT_SEGMENT};

#[derive(Args)]
pub struct CryptoArgs {
    /// Plaintext size in MiB.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Plaintext bytes per artifact segment.
    #[arg(long, default_value_t = DEFAULT_SEGMENT)]
    segment: u32,
    /// Measurements of each kind; the best is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub fn run(args: CryptoArgs) -> Result<()> {
    let size = args.mib << 20;
    let plain: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31)).collect();
    let ring = Keyring::new("bench", [("bench".to_string(), Key::from_bytes([9; 32]))])
        .map_err(anyhow::Error::msg)?;
    let mut bare = Vec::new();
    let mut enc = Vec::new();
    let mut dec = Vec::new();
    let mut sealed = Vec::with_capacity(size + size / args.segment as usize * 16 + 4096);
    for _ in 0..args.rounds.max(1) {
        let mut buf = plain.clone();
        let cipher = Aes256Gcm::new(&[9u8; 32].into());
        let t = Instant::now();
        cipher
            .encrypt_inout_detached(&[0u8; 12].into(), b"", buf.as_mut_slice().into())
            .map_err(|_| anyhow::anyhow!("bare encryption failed"))?;
        bare.push(rate(size, t));

        sealed.clear();
        let t = Instant::now();
        let mut w = ArtifactWriter::new(&mut sealed, &ring, "bench", "1", args.segment)?;
        w.write_all(&plain)?;
        w.finish()?;
        enc.push(rate(size, t));

        let t = Instant::now();
        let mut r = ArtifactReader::open(sealed.as_slice(), &ring, "bench", "1")?;
        let mut out = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            let n = r.read(&mut out).context("decrypting")?;
            if n == 0 {
                break;
            }
            total += n;
        }
        dec.push(rate(size, t));
        ensure!(total == size, "decrypted {total} of {size} bytes");
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (bare, enc, dec) = (best(&bare), best(&enc), best(&dec));
    println!(
        "rankload crypto: {} MiB, {} KiB segments, best of {} rounds, one core",
        args.mib,
        args.segment >> 10,
        args.rounds
    );
    println!("  bare AES-256-GCM, one buffer : {:>7.0} MB/s", bare / 1e6);
    println!(
        "  artifact encrypt (STREAM)    : {:>7.0} MB/s  ({:.3}x bare)",
        enc / 1e6,
        enc / bare
    );
    println!(
        "  artifact decrypt (STREAM)    : {:>7.0} MB/s  ({:.3}x bare)",
        dec / 1e6,
        dec / bare
    );
    Ok(())
}

fn rate(bytes: usize, since: Instant) -> f64 {
    bytes as f64 / since.elapsed().as_secs_f64()
}

#[derive(Args)]
pub struct RssArgs {
    /// Size of the bundle's one large file, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Scratch directory (needs about three times the size free).
    #[arg(long, default_value = "bench-out/rss")]
    dir: std::path::PathBuf,
}

/// Peak resident memory above idle while sealing a bundle into an artifact file and while
/// opening it again, with the real file-based code paths the store uses.
pub fn rss(args: RssArgs) -> Result<()> {
    use rankd_artifact::{open_bundle, seal_bundle};
    let bundle = args.dir.join("bundle");
    let out = args.dir.join("out");
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&bundle)?;
    std::fs::create_dir_all(&out)?;
    std::fs::write(bundle.join("manifest.json"), b"{}")?;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(bundle.join("items.bin"))?);
        let block: Vec<u8> = (0..1 << 20)
            .map(|i: usize| (i as u8).wrapping_mul(7))
            .collect();
        for _ in 0..args.mib {
            f.write_all(&block)?;
        }
        f.flush()?;
    }
    let ring = Keyring::new("bench", [("bench".to_string(), Key::from_bytes([9; 32]))])
        .map_err(anyhow::Error::msg)?;
    let artifact = args.dir.join("artifact");
    let size = (args.mib << 20) as f64;

    let idle = reset_peak()?;
    let t = Instant::now();
    let sealed = seal_bundle(
        &bundle,
        &["manifest.json", "items.bin"],
        &ring,
        "bench",
        "1",
        DEFAULT_SEGMENT,
        &artifact,
    )?;
    let seal_s = t.elapsed().as_secs_f64();
    let seal_peak = peak_kib()?;

    let idle2 = reset_peak()?;
    let t = Instant::now();
    open_bundle(&artifact, &sealed.sha256, &ring, "bench", "1", &out)?;
    let open_s = t.elapsed().as_secs_f64();
    let open_peak = peak_kib()?;
    let _ = std::fs::remove_dir_all(&args.dir);

    println!(
        "rankload artifact-rss: {} MiB bundle, {} KiB segments, files on {}",
        args.mib,
        DEFAULT_SEGMENT >> 10,
        args.dir.display()
    );
    println!(
        "  seal (pack + encrypt + fsync):       peak {:>6.1} MiB above idle, {:>6.0} MB/s",
        (seal_peak.saturating_sub(idle)) as f64 / 1024.0,
        size / seal_s / 1e6
    );
    println!(
        "  open (verify sha + decrypt + unpack): peak {:>6.1} MiB above idle, {:>6.0} MB/s",
        (open_peak.saturating_sub(idle2)) as f64 / 1024.0,
        size / open_s / 1e6
    );
    Ok(())
}

/// Resets the kernel's peak-RSS mark (VmHWM) to the current RSS and returns it, in KiB.
fn reset_peak() -> Result<u64> {
    std::fs::write("/proc/self/clear_refs", b"5").context("resetting VmHWM")?;
    status_kib("VmRSS:")
}

fn peak_kib() -> Result<u64> {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} in /proc/self/status"))
}
