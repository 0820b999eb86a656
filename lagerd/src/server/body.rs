//! Where request bodies are kept while they arrive, and what handlers see.
//!
//! Small bodies live in memory; bodies over `SPOOL_OVER` are written to an
//! unlinked file under the spool directory (the daemon's state dir, on disk:
//! `/tmp` is often tmpfs, which is RAM) and mapped read-only when complete,
//! so a 64 MiB upload costs page cache the kernel can drop, not heap. Either
//! way a handler sees `&[u8]`. One `Budget` caps the bytes all bodies in
//! flight hold, in memory and on disk; a request beyond it is refused with
//! 503 instead of taking the box's memory or disk.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Bodies larger than this are spooled to disk (when a spool dir is set).
pub const SPOOL_OVER: usize = 256 * 1024;

/// The bytes that request bodies may hold at once, shared by all connections.
pub struct Budget {
    memory_max: usize,
    spool_max: usize,
    memory: AtomicUsize,
    spool: AtomicUsize,
    spool_dir: Option<PathBuf>,
}

/// Why a body could not be kept.
#[derive(Debug)]
pub enum KeepError {
    /// The budget is spent: `what` names which one and its size.
    Budget { what: &'static str, max: usize },
    /// The spool file could not be created or written.
    Spool { dir: PathBuf, err: io::Error },
}

impl std::fmt::Display for KeepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepError::Budget { what, max } => write!(
                f,
                "This box is receiving too many request bodies at once ({} MiB {what} in use); retry in a few seconds",
                max >> 20
            ),
            KeepError::Spool { dir, err } => write!(
                f,
                "Cannot store the request body under {}: {err}; free space there or retry later",
                dir.display()
            ),
        }
    }
}

impl Budget {
    pub fn new(memory_max: usize, spool_max: usize, spool_dir: Option<PathBuf>) -> Budget {
        Budget {
            memory_max,
            spool_max,
            memory: AtomicUsize::new(0),
            spool: AtomicUsize::new(0),
            spool_dir,
        }
    }

    /// Bytes of bodies held now: (in memory, spooled).
    pub fn in_use(&self) -> (usize, usize) {
        (
            self.memory.load(Ordering::SeqCst),
            self.spool.load(Ordering::SeqCst),
        )
    }

    fn take(&self, spooled: bool, bytes: usize) -> Result<(), KeepError> {
        let (counter, max, what) = if spooled {
            (&self.spool, self.spool_max, "of spooled uploads")
        } else {
            (&self.memory, self.memory_max, "of memory for bodies")
        };
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= max)
            })
            .map(drop)
            .map_err(|_| KeepError::Budget { what, max })
    }

    fn give(&self, spooled: bool, bytes: usize) {
        let counter = if spooled { &self.spool } else { &self.memory };
        counter.fetch_sub(bytes, Ordering::SeqCst);
    }
}

/// Bytes taken from a budget, given back on drop.
struct Reserved {
    budget: Arc<Budget>,
    spooled: bool,
    bytes: usize,
}

impl Reserved {
    fn new(budget: &Arc<Budget>, spooled: bool, bytes: usize) -> Result<Reserved, KeepError> {
        budget.take(spooled, bytes)?;
        Ok(Reserved {
            budget: budget.clone(),
            spooled,
            bytes,
        })
    }

    fn grow(&mut self, bytes: usize) -> Result<(), KeepError> {
        self.budget.take(self.spooled, bytes)?;
        self.bytes += bytes;
        Ok(())
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.give(self.spooled, self.bytes);
    }
}

/// A body being received.
pub struct Receiving {
    store: Store,
    reserved: Reserved,
}

enum Store {
    Memory(Vec<u8>),
    Spool { file: File, len: usize },
}

impl Receiving {
    /// Room for a body of `length` bytes when known (Content-Length), else
    /// an empty one that grows (chunked).
    pub fn start(budget: &Arc<Budget>, length: Option<u64>) -> Result<Receiving, KeepError> {
        let length = length.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        if length > SPOOL_OVER && budget.spool_dir.is_some() {
            let reserved = Reserved::new(budget, true, length)?;
            return Ok(Receiving {
                store: Store::Spool {
                    file: spool_file(budget)?,
                    len: 0,
                },
                reserved,
            });
        }
        let reserved = Reserved::new(budget, false, length)?;
        Ok(Receiving {
            store: Store::Memory(Vec::with_capacity(length)),
            reserved,
        })
    }

    /// Appends body bytes, taking budget beyond what was reserved and
    /// moving to a spool file once the body outgrows memory.
    pub fn append(&mut self, data: &[u8]) -> Result<(), KeepError> {
        let held = match &self.store {
            Store::Memory(bytes) => bytes.len(),
            Store::Spool { len, .. } => *len,
        };
        let total = held.saturating_add(data.len());
        let budget = self.reserved.budget.clone();
        if let Store::Memory(bytes) = &self.store {
            if total > SPOOL_OVER && budget.spool_dir.is_some() {
                let reserved = Reserved::new(&budget, true, total)?;
                let mut file = spool_file(&budget)?;
                write_spool(&budget, &mut file, bytes)?;
                self.store = Store::Spool { file, len: held };
                // The memory reservation goes back as `reserved` is replaced.
                self.reserved = reserved;
            }
        }
        if total > self.reserved.bytes {
            self.reserved.grow(total - self.reserved.bytes)?;
        }
        match &mut self.store {
            Store::Memory(bytes) => bytes.extend_from_slice(data),
            Store::Spool { file, len } => {
                write_spool(&budget, file, data)?;
                *len = total;
            }
        }
        Ok(())
    }

    /// The complete body, as handlers see it.
    pub fn finish(self) -> Result<RequestBody, KeepError> {
        let Receiving { store, reserved } = self;
        let store = match store {
            Store::Memory(bytes) => Kept::Memory(bytes),
            Store::Spool { len: 0, .. } => Kept::Memory(Vec::new()),
            Store::Spool { file, len } => {
                let dir = reserved.budget.spool_dir.clone().unwrap_or_default();
                Kept::Mapped(Mapping::of(&file, len).map_err(|err| KeepError::Spool { dir, err })?)
            }
        };
        Ok(RequestBody {
            store,
            _reserved: Some(reserved),
        })
    }
}

fn write_spool(budget: &Budget, file: &mut File, data: &[u8]) -> Result<(), KeepError> {
    file.write_all(data).map_err(|err| KeepError::Spool {
        dir: budget.spool_dir.clone().unwrap_or_default(),
        err,
    })
}

/// A file with no name in the spool dir: nothing is left behind, whatever
/// way the daemon stops.
fn spool_file(budget: &Budget) -> Result<File, KeepError> {
    let dir = budget.spool_dir.as_deref().unwrap_or(Path::new("."));
    create_unnamed(dir).map_err(|err| KeepError::Spool {
        dir: dir.to_path_buf(),
        err,
    })
}

fn create_unnamed(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match tmpfile {
        Ok(file) => return Ok(file),
        // File systems without O_TMPFILE: a fresh name, unlinked at once.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) => {}
        Err(e) => return Err(e),
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = dir.join(format!(
        ".lagerd-upload-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    Ok(file)
}

/// A request body as handlers see it: a byte slice (`Deref<Target = [u8]>`),
/// in memory or mapped from its spool file.
#[derive(Default)]
pub struct RequestBody {
    store: Kept,
    /// Budget held until the handler is done with the body.
    _reserved: Option<Reserved>,
}

enum Kept {
    Memory(Vec<u8>),
    Mapped(Mapping),
}

impl Default for Kept {
    fn default() -> Kept {
        Kept::Memory(Vec::new())
    }
}

impl From<Vec<u8>> for RequestBody {
    /// A body not counted in any budget (tests, fuzz targets).
    fn from(bytes: Vec<u8>) -> RequestBody {
        RequestBody {
            store: Kept::Memory(bytes),
            _reserved: None,
        }
    }
}

impl Deref for RequestBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.store {
            Kept::Memory(bytes) => bytes,
            Kept::Mapped(mapping) => mapping.bytes(),
        }
    }
}

impl AsRef<[u8]> for RequestBody {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.store {
            Kept::Memory(_) => "memory",
            Kept::Mapped(_) => "spooled",
        };
        write!(f, "RequestBody({} bytes, {kind})", self.len())
    }
}

/// A read-only private mapping of a whole spool file.
struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; sharing
// or sending a pointer to immutable bytes between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above: nothing can write through it.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn of(file: &File, len: usize) -> io::Result<Mapping> {
        debug_assert!(len > 0);
        // SAFETY: a fresh mapping chosen by the kernel (addr null) of a
        // file we own and opened for reading; it aliases no Rust memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable until `drop`, and the
        // file behind it has no name and is written by no one: we wrote all
        // `len` bytes before mapping and closed our descriptor after, so the
        // bytes cannot change or shrink under the slice (only a process that
        // could also ptrace us could reach it through /proc/<pid>/map_files).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `of` mapped; no slice of it
        // outlives `self` (`bytes` borrows `self`).
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spool_dir(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("lagerd-spool-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    #[test]
    fn small_bodies_stay_in_memory_and_large_ones_are_mapped() {
        let dir = spool_dir("sizes");
        let budget = Arc::new(Budget::new(1 << 20, 8 << 20, Some(dir.0.clone())));
        let mut small = Receiving::start(&budget, Some(5)).unwrap();
        small.append(b"hello").unwrap();
        assert_eq!(budget.in_use(), (5, 0));
        let small = small.finish().unwrap();
        assert_eq!(&*small, b"hello");
        assert!(format!("{small:?}").contains("memory"));

        // A chunked body that outgrows memory moves to disk on the way.
        let mut large = Receiving::start(&budget, None).unwrap();
        let block: Vec<u8> = (0..64 * 1024).map(|i| i as u8).collect();
        for _ in 0..5 {
            large.append(&block).unwrap();
        }
        assert_eq!(budget.in_use(), (5, 5 * block.len()));
        let large = large.finish().unwrap();
        assert!(format!("{large:?}").contains("spooled"), "{large:?}");
        assert_eq!(large.len(), 5 * block.len());
        assert!(large.chunks(block.len()).all(|c| c == &block[..]));
        // The spool file has no name.
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
        drop((small, large));
        assert_eq!(budget.in_use(), (0, 0), "budget given back with the bodies");
    }

    #[test]
    fn a_spent_budget_is_refused_with_what_to_do() {
        let budget = Arc::new(Budget::new(100, 0, None));
        let held = Receiving::start(&budget, Some(80)).unwrap();
        let refused = Receiving::start(&budget, Some(30)).err().unwrap();
        assert!(
            refused.to_string().contains("retry in a few seconds"),
            "{refused}"
        );
        let mut growing = Receiving::start(&budget, None).unwrap();
        growing.append(&[0; 20]).unwrap();
        assert!(growing.append(&[0; 1]).is_err());
        drop((held, growing));
        assert_eq!(budget.in_use(), (0, 0));
        assert!(Receiving::start(&budget, Some(100)).is_ok());
    }
}
