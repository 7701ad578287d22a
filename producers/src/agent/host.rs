//! Host-level injectors (memory, disk, CPU, storage I/O) and the journal of what they leave behind.
//!
//! Each injector returns a [`HostFault`] whose `Drop` reverts it, so a fault ends on every path out of an
//! experiment: its duration, a rollback to 100%, an abort, a shutdown, a panic. What would survive the
//! process (a fill file, a cgroup limit) is written to the journal first; an agent restarted after SIGKILL
//! reverts the journal before it serves.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::AgentConfig;
use super::faults::{DiskFill, Fault};
use chaoseater_schemas::sync::lock;

const MB: u64 = 1 << 20;

/// Something on the host that outlives the process unless reverted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Leftover {
    /// A file we created (disk fill, I/O scratch).
    File { path: PathBuf },
    /// A cgroup control file we changed, with the value to put back.
    CgroupValue { file: PathBuf, previous: String },
}

impl Leftover {
    fn revert(&self) -> std::io::Result<()> {
        match self {
            Leftover::File { path } => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Leftover::CgroupValue { file, previous } => std::fs::write(file, previous),
        }
    }
}

/// The on-disk list of leftovers (`journal.json` in the agent's state directory), rewritten atomically.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: Mutex<Vec<Leftover>>,
}

impl Journal {
    /// Opens the journal and reverts whatever a previous process left; returns what it cleaned.
    pub fn open(state_dir: &Path) -> std::io::Result<(Arc<Self>, Vec<Leftover>)> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join("journal.json");
        let old: Vec<Leftover> = match std::fs::read(&path) {
            // Starting empty would forget what a previous process left on the host (a fill file, a cgroup
            // limit) for good: refuse, and say how to go on.
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is unreadable ({e}); it lists host changes (fill files, cgroup values) a previous \
                         agent may have left. Revert what it names by hand, move it aside, and start again",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let journal = Arc::new(Self { path, entries: Mutex::new(Vec::new()) });
        let mut kept = Vec::new();
        for leftover in &old {
            if let Err(e) = leftover.revert() {
                tracing::error!(?leftover, error = %e, "Could not revert a leftover of a previous run; keeping it.");
                kept.push(leftover.clone());
            } else {
                tracing::warn!(?leftover, "Reverted a leftover of a previous run.");
            }
        }
        *lock(&journal.entries) = kept;
        journal.save()?;
        Ok((journal, old))
    }

    fn save(&self) -> std::io::Result<()> {
        let entries = lock(&self.entries).clone();
        let tmp = self.path.with_extension("json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(&entries).unwrap_or_default())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Records `leftover` durably before it is created.
    pub fn record(&self, leftover: Leftover) -> std::io::Result<()> {
        lock(&self.entries).push(leftover);
        self.save()
    }

    /// Reverts `leftover` and forgets it.
    pub fn revert(&self, leftover: &Leftover) {
        if let Err(e) = leftover.revert() {
            tracing::error!(?leftover, error = %e, "Revert failed; left in the journal for the next start.");
            return;
        }
        lock(&self.entries).retain(|e| e != leftover);
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "Could not rewrite the journal.");
        }
    }

    pub fn entries(&self) -> Vec<Leftover> {
        lock(&self.entries).clone()
    }
}

/// Why a host fault could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Refused(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Io { what, source }
}

/// A running host fault; dropping it reverts everything it did.
#[derive(Debug)]
pub struct HostFault {
    /// How the fault acts, for the result (`busy threads`, `cgroup cpu.max`, …).
    pub mechanism: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Memory held, as one buffer: an allocation this large is its own mapping, so freeing or shrinking
    /// it returns the pages to the system (many small chunks would stay in the allocator's heap).
    memory: Arc<Mutex<Vec<u8>>>,
    /// For scaling on partial rollback: the full size and the share of it still applied (basis points).
    full_bytes: u64,
    intensity_bp: Arc<AtomicU64>,
    leftovers: Vec<Leftover>,
    fill_file: Option<PathBuf>,
    journal: Arc<Journal>,
}

impl HostFault {
    fn new(mechanism: impl Into<String>, journal: Arc<Journal>) -> Self {
        Self {
            mechanism: mechanism.into(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            memory: Arc::new(Mutex::new(Vec::new())),
            full_bytes: 0,
            intensity_bp: Arc::new(AtomicU64::new(10_000)),
            leftovers: Vec::new(),
            fill_file: None,
            journal,
        }
    }

    /// Applies `fault` on this host. Blocking (allocates, writes files): call from `spawn_blocking`.
    pub fn apply(fault: &Fault, config: &AgentConfig, journal: Arc<Journal>, tag: &str) -> Result<Self, HostError> {
        // The tag names files: whatever the caller checked, nothing in it can leave the directory.
        let tag: String =
            tag.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        match fault {
            Fault::MemoryPressure { mb } => {
                let mut f = Self::new(format!("{mb} MB allocated and touched"), journal);
                f.full_bytes = mb * MB;
                let mut buffer = Vec::with_capacity(f.full_bytes as usize);
                buffer.resize(f.full_bytes as usize, 0xA5u8);
                *lock(&f.memory) = buffer;
                Ok(f)
            }
            Fault::MemoryLeak { mb_per_second } => {
                let cap = config.caps.max_memory_mb;
                let mut f = Self::new(format!("leaking {mb_per_second} MB/s, capped at {cap} MB"), journal);
                let (stop, memory, intensity) = (f.stop.clone(), f.memory.clone(), f.intensity_bp.clone());
                let rate = *mb_per_second;
                f.threads.push(std::thread::spawn(move || leak(rate, cap, &stop, &intensity, &memory)));
                Ok(f)
            }
            Fault::DiskFull { fill, path } => {
                let dir = path.clone().unwrap_or_else(|| config.scratch_dir());
                create_scratch(&dir, config)?;
                let stat = rustix::fs::statvfs(&dir)
                    .map_err(|e| HostError::Io { what: format!("statvfs {}", dir.display()), source: e.into() })?;
                let total = stat.f_blocks * stat.f_frsize;
                let available = stat.f_bavail * stat.f_frsize;
                let wanted = match fill {
                    DiskFill::Bytes(b) => *b,
                    DiskFill::Percent(p) => {
                        let target_used = (total as f64 * p / 100.0) as u64;
                        let used = total.saturating_sub(available);
                        if target_used <= used {
                            return Err(HostError::Refused(format!(
                                "{} is already {:.1}% full, at or above fill_percent {p}",
                                dir.display(),
                                used as f64 * 100.0 / total.max(1) as f64
                            )));
                        }
                        target_used - used
                    }
                };
                let cap = config.caps.max_disk_bytes.min(available.saturating_sub(MB));
                let bytes = wanted.min(cap);
                let file = dir.join(format!("chaoseater-disk-full-{tag}.fill"));
                let mut f = Self::new(
                    format!(
                        "{} with {bytes} bytes{}",
                        file.display(),
                        if bytes < wanted { format!(" (capped; {wanted} asked)") } else { String::new() }
                    ),
                    journal,
                );
                f.record(Leftover::File { path: file.clone() })?;
                write_fill(&file, bytes).map_err(io(format!("filling {}", file.display())))?;
                f.full_bytes = bytes;
                f.fill_file = Some(file);
                Ok(f)
            }
            Fault::CpuThrottle { percent, cgroup: Some(cgroup) } => {
                let file = config.host.cgroup_root.join(cgroup.trim_start_matches('/')).join("cpu.max");
                let previous = std::fs::read_to_string(&file).map_err(io(format!("reading {}", file.display())))?;
                let period = 100_000u64;
                let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
                let quota = ((1.0 - percent / 100.0) * cores * period as f64).max(1000.0) as u64;
                let mut f = Self::new(format!("cgroup {} cpu.max {quota} {period}", file.display()), journal);
                f.record(Leftover::CgroupValue { file: file.clone(), previous: previous.trim().to_owned() })?;
                std::fs::write(&file, format!("{quota} {period}"))
                    .map_err(io(format!("writing {}", file.display())))?;
                Ok(f)
            }
            Fault::CpuThrottle { percent, cgroup: None } => {
                let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
                let busy_cores = cores as f64 * percent / 100.0;
                let threads = busy_cores.ceil().max(1.0) as usize;
                let duty = busy_cores / threads as f64;
                let mut f = Self::new(
                    format!("{threads} busy thread(s) taking {percent}% of {cores} CPU(s) (no target cgroup)"),
                    journal,
                );
                for _ in 0..threads {
                    let (stop, intensity) = (f.stop.clone(), f.intensity_bp.clone());
                    f.threads.push(std::thread::spawn(move || burn(duty, &stop, &intensity)));
                }
                Ok(f)
            }
            Fault::StorageBottleneck { iops, path, cgroup: Some(cgroup) } => {
                let dir = path.clone().unwrap_or_else(|| config.scratch_dir());
                let file = config.host.cgroup_root.join(cgroup.trim_start_matches('/')).join("io.max");
                let dev = rustix::fs::stat(&dir)
                    .map_err(|e| HostError::Io { what: format!("stat {}", dir.display()), source: e.into() })?
                    .st_dev;
                let device = format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev));
                let mut f =
                    Self::new(format!("cgroup {} io.max {device} riops={iops} wiops={iops}", file.display()), journal);
                f.record(Leftover::CgroupValue {
                    file: file.clone(),
                    previous: format!("{device} riops=max wiops=max"),
                })?;
                std::fs::write(&file, format!("{device} riops={iops} wiops={iops}"))
                    .map_err(io(format!("writing {}", file.display())))?;
                Ok(f)
            }
            Fault::StorageBottleneck { path, cgroup: None, .. } => {
                let dir = path.clone().unwrap_or_else(|| config.scratch_dir());
                create_scratch(&dir, config)?;
                let workers = 2;
                let mut f = Self::new(
                    format!("{workers} competing synced-write workers on {} (no target cgroup)", dir.display()),
                    journal,
                );
                for i in 0..workers {
                    let file = dir.join(format!("chaoseater-io-{tag}-{i}.scratch"));
                    f.record(Leftover::File { path: file.clone() })?;
                    let (stop, intensity) = (f.stop.clone(), f.intensity_bp.clone());
                    f.threads.push(std::thread::spawn(move || hammer(&file, &stop, &intensity)));
                }
                Ok(f)
            }
            other => Err(HostError::Refused(format!("{other:?} is not a host fault"))),
        }
    }

    fn record(&mut self, leftover: Leftover) -> Result<(), HostError> {
        self.journal.record(leftover.clone()).map_err(io("writing the agent journal"))?;
        self.leftovers.push(leftover);
        Ok(())
    }

    /// Partial rollback: keep `remaining` (0..=1) of the fault's intensity.
    pub fn scale(&self, remaining: f64) {
        let remaining = remaining.clamp(0.0, 1.0);
        self.intensity_bp.store((remaining * 10_000.0).round() as u64, Ordering::Relaxed);
        {
            let mut memory = lock(&self.memory);
            let keep = (self.full_bytes.max(memory.len() as u64) as f64 * remaining) as usize;
            if keep < memory.len() {
                memory.truncate(keep);
                memory.shrink_to_fit();
            }
        }
        if let Some(file) = &self.fill_file
            && let Ok(f) = OpenOptions::new().write(true).open(file)
        {
            let _ = f.set_len((self.full_bytes as f64 * remaining) as u64);
        }
    }
}

impl Drop for HostFault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        *lock(&self.memory) = Vec::new();
        for leftover in self.leftovers.drain(..) {
            self.journal.revert(&leftover);
        }
    }
}

/// Allocates and touches `rate` MB per second until `cap` MB are held or `stop` is set.
fn leak(rate: f64, cap_mb: u64, stop: &AtomicBool, intensity: &AtomicU64, memory: &Mutex<Vec<u8>>) {
    let started = Instant::now();
    // Reserved, not touched: only the pages written below count toward the resident set.
    lock(memory).reserve_exact((cap_mb * MB) as usize);
    while !stop.load(Ordering::Relaxed) {
        let share = intensity.load(Ordering::Relaxed) as f64 / 10_000.0;
        let due = ((started.elapsed().as_secs_f64() * rate * MB as f64) as u64).min(cap_mb * MB) as f64 * share;
        let due = due as usize;
        {
            let mut held = lock(memory);
            if held.len() < due {
                held.resize(due, 0x5A);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Busy for `duty` of every 10 ms period (scaled by the intensity), asleep for the rest.
fn burn(duty: f64, stop: &AtomicBool, intensity: &AtomicU64) {
    let period = Duration::from_millis(10);
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let busy = period.mul_f64(duty * intensity.load(Ordering::Relaxed) as f64 / 10_000.0);
        let start = Instant::now();
        while start.elapsed() < busy {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        std::thread::sleep(period.saturating_sub(busy));
    }
}

/// Competing I/O: 4 KiB writes each followed by fdatasync, over a 64 MiB region of `file`.
fn hammer(file: &Path, stop: &AtomicBool, intensity: &AtomicU64) {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(file) else {
        tracing::error!(file = %file.display(), "Cannot open the I/O scratch file.");
        return;
    };
    let block = [0x3Cu8; 4096];
    let mut offset = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if intensity.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let ok = f.seek(SeekFrom::Start(offset)).and_then(|_| f.write_all(&block)).and_then(|_| f.sync_data());
        if let Err(e) = ok {
            tracing::warn!(error = %e, "Competing I/O write failed.");
            std::thread::sleep(Duration::from_millis(50));
        }
        offset = (offset + 4096 * 17) % (64 * MB);
    }
}

/// Creates `dir` only when it is the agent's own scratch directory: any other allowed directory must
/// exist already, so a fault never leaves directories behind.
fn create_scratch(dir: &Path, config: &AgentConfig) -> Result<(), HostError> {
    if dir == config.scratch_dir() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    } else if !dir.is_dir() {
        return Err(HostError::Refused(format!("{} is not an existing directory", dir.display())));
    }
    Ok(())
}

fn write_fill(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    let chunk = vec![0u8; MB as usize];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MB) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}

/// This process's resident set size in bytes (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}
