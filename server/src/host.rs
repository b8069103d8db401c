//! The host as the node sees it: free space on the data directory's filesystem, and the
//! process's CPU time and resident memory. Exported as metrics, and the free-space figure
//! guards uploads ([`check_room`]) so a node refuses work before the disk fills rather
//! than failing halfway through it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// How often the gauges are refreshed.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Space on the filesystem that holds `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged process may still write.
    pub available: u64,
    pub capacity: u64,
}

pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frag = s.fragment_size() as u64;
    Ok(DiskSpace {
        available: (s.blocks_available() as u64).saturating_mul(frag),
        capacity: (s.blocks() as u64).saturating_mul(frag),
    })
}

/// Why an upload was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not enough disk space for this upload: it needs about {needed} bytes on {dir} (staging, \
     unpacking and the encrypted copy) while keeping artifacts.min_free_bytes = {reserve} free, \
     but only {available} are available"
)]
pub struct NoRoom {
    pub needed: u64,
    pub reserve: u64,
    pub available: u64,
    pub dir: String,
}

/// An upload of `total_bytes` passes through the disk three times before it is stored: the
/// packed stream, the unpacked bundle, and the encrypted artifact. It is refused unless all
/// three fit and `reserve` bytes are still free afterwards.
pub fn check_room(
    space: DiskSpace,
    total_bytes: u64,
    reserve: u64,
    dir: &Path,
) -> Result<(), NoRoom> {
    let needed = total_bytes.saturating_mul(3);
    if space.available >= needed.saturating_add(reserve) {
        return Ok(());
    }
    Err(NoRoom {
        needed,
        reserve,
        available: space.available,
        dir: dir.display().to_string(),
    })
}

/// Resident memory and CPU time of this process, from /proc (Linux).
fn process_stats() -> Option<(u64, f64)> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the ")".
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((
        resident_pages.saturating_mul(page as u64),
        (utime + stime) as f64 / ticks as f64,
    ))
}

/// Takes one sample into the gauges. `cpu_seen` carries the CPU time already counted,
/// since a counter can only be increased.
pub fn sample(data_dir: &Path, metrics: &Metrics, cpu_seen: &mut f64) {
    let h = &metrics.host;
    match disk_space(data_dir) {
        Ok(s) => {
            h.data_dir_available
                .set(i64::try_from(s.available).unwrap_or(i64::MAX));
            h.data_dir_capacity
                .set(i64::try_from(s.capacity).unwrap_or(i64::MAX));
        }
        Err(e) => tracing::debug!(error = %e, "statvfs on the data directory failed"),
    }
    if let Some((rss, cpu)) = process_stats() {
        h.resident_memory
            .set(i64::try_from(rss).unwrap_or(i64::MAX));
        if cpu > *cpu_seen {
            h.cpu_seconds.inc_by(cpu - *cpu_seen);
            *cpu_seen = cpu;
        }
    }
}

/// Samples every [`SAMPLE_INTERVAL`] on the blocking pool until `stop` changes. The node
/// takes the first sample itself, before it reports serving, and passes on `cpu_seen`.
pub async fn run(
    data_dir: PathBuf,
    metrics: Arc<Metrics>,
    mut cpu_seen: f64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + SAMPLE_INTERVAL,
        SAMPLE_INTERVAL,
    );
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let (dir, m) = (data_dir.clone(), metrics.clone());
        match tokio::task::spawn_blocking(move || {
            sample(&dir, &m, &mut cpu_seen);
            cpu_seen
        })
        .await
        {
            Ok(seen) => cpu_seen = seen,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_needs_three_times_its_size_plus_the_reserve() {
        let space = |available| DiskSpace {
            available,
            capacity: 1 << 40,
        };
        let dir = Path::new("/data");
        assert!(check_room(space(400), 100, 100, dir).is_ok());
        let err = check_room(space(399), 100, 100, dir).expect_err("one byte short");
        assert_eq!((err.needed, err.reserve, err.available), (300, 100, 399));
        assert!(err.to_string().contains("/data"), "{err}");
        assert!(
            check_room(space(0), u64::MAX, 0, dir).is_err(),
            "no overflow"
        );
    }

    #[test]
    fn the_real_filesystem_and_process_answer() {
        let dir = tempfile::tempdir().expect("a directory");
        let s = disk_space(dir.path()).expect("statvfs");
        assert!(s.capacity > 0 && s.available <= s.capacity, "{s:?}");
        let (rss, cpu) = process_stats().expect("/proc/self");
        assert!(rss > 1 << 20, "a test process holds more than 1 MiB: {rss}");
        assert!(cpu >= 0.0);
    }
}
