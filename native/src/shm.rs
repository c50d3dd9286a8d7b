//! The tenant table shared by every RLS worker process: one file-backed `MAP_SHARED` mapping
//! (typically under `/dev/shm`), so N workers on one port enforce ONE limit per tenant, and a
//! worker that dies and is restarted finds the table as it was.
//!
//! # File layout (version [`LAYOUT_VERSION`])
//!
//! ```text
//! offset 0            header, HEADER_SIZE (4096) bytes:
//!                       magic u64, version u32, slot_size u32, capacity u64, header_size u64,
//!                       limits_generation u64, limits_updated_unix_ns u64, len u64,
//!                       lock_recoveries u64, worker_requests [u64; 64], counters [u64; 256]
//! offset 4096         capacity slots of SLOT_SIZE (320) bytes, 64-byte aligned:
//!                       state u32, lock u32, key_len u32, key_hash u32, key [u8; 152],
//!                       TenantState (128 bytes), padding
//! ```
//!
//! `key_hash` is the high 32 bits of the key's hash (the low bits pick the home slot), a
//! cheap filter before comparing key bytes.
//!
//! Every header field is an atomic; the file is created by `ftruncate`, so it is sparse: a
//! page of slots costs memory only once a tenant lands in it (65,536 slots = 20 MiB + 4 KiB
//! of address space). [`SharedTable::for_each`] reads every slot's state word and so touches
//! every page.
//!
//! # Slots
//!
//! Open addressing with linear probing on a fixed hash (FNV-1a 64 with a murmur3 finalizer,
//! constant seed: identical in every process, unlike std's `RandomState`). Slots are never
//! deleted, so a slot's life is `EMPTY (0) → INIT (1) → READY (2)` and a READY slot's key
//! never changes; READY is published with a Release store, so a prober that reads READY
//! with Acquire may compare the key without the lock.
//!
//! Insertion is decided under the slot's lock, not by a CAS on the state word: a prober
//! that meets a slot that is not READY takes that slot's lock, then looks again. READY
//! with its key → found; READY with another key → unlock, probe on; EMPTY or INIT → insert
//! here (INIT under a free lock means an inserter died mid-way: take it over). Since a key
//! always goes to the first non-READY slot of its probe sequence and that choice is made
//! under the lock, two processes inserting the same tenant end in the same slot. (Claiming a
//! slot by a CAS of the state word alone would leave it at INIT forever if the inserter were
//! killed between the claim and the publish, wedging every tenant whose probe sequence
//! crosses it; holding the PID lock while initializing makes that case recoverable like any
//! other.)
//!
//! # Locks and dead holders
//!
//! Each slot's lock word holds the holder's PID (0 = free). A waiter spins, then yields;
//! after about 1 ms it checks, once per millisecond, whether the holder is alive
//! (`kill(pid, 0)` → `ESRCH`, or a zombie in `/proc/<pid>/stat`) and if not steals the lock
//! with a CAS (counted in [`SharedTable::lock_recoveries`]). The critical section only
//! writes plain integers (`TenantState` is `repr(C)` u64s; any bit pattern is a valid value),
//! so a holder killed mid-update leaves at worst a wrong token count or counter for that one
//! tenant, never unsafety. Requirements this relies on: all processes share one PID
//! namespace (a holder in another namespace would look dead), and a PID is not reused while
//! it still sits in a lock word (that could only delay recovery, never break exclusion).
//! Locks are not reentrant: `f` must not call back into the table for the same tenant.
//! A process forked after opening may keep using the inherited `SharedTable` (the mapping is
//! `MAP_SHARED`, and a `pthread_atfork` handler makes the child lock under its own PID).
//!
//! # Capacity
//!
//! `capacity` is a power of two (at most [`MAX_CAPACITY`]). New tenants are refused with
//! [`TableError::Full`] once `capacity - capacity / 10` slots are taken (about 90 %, where
//! linear probing is still short), so tiny test tables (< 10 slots) can be filled entirely.
//! Probing is bounded by `capacity` in every case.
//!
//! The file is created with mode 0600: every worker must run as the creating user.

use std::cell::UnsafeCell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::bucket::{Bucket, Limit};

/// `b"MIMIREDG"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MIMIREDG");
/// Bumped whenever the file layout or the meaning of a field changes.
pub const LAYOUT_VERSION: u32 = 1;
/// Longest tenant ID (Mimir's `MaxTenantIDLength`).
pub const MAX_KEY_LEN: usize = 150;
/// Key bytes stored per slot (`MAX_KEY_LEN` rounded up to a multiple of 8).
const KEY_BYTES: usize = 152;
/// Bytes per slot.
pub const SLOT_SIZE: usize = 320;
/// Bytes before the first slot.
pub const HEADER_SIZE: usize = 4096;
/// Entries of [`SharedTable::worker_requests`].
pub const WORKER_SLOTS: usize = 64;
/// Entries of [`SharedTable::counter`].
pub const COUNTERS: usize = 256;
/// Largest capacity accepted (16 Mi slots, 5 GiB of file).
pub const MAX_CAPACITY: usize = 1 << 24;
/// The capacity the engine uses by default.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

const EMPTY: u32 = 0;
const INIT: u32 = 1;
const READY: u32 = 2;

/// Spins before a waiter starts yielding the CPU.
const SPINS_BEFORE_YIELD: u32 = 64;
/// How long a waiter waits before (and between) checks that the holder is alive.
const LIVENESS_CHECK_EVERY: Duration = Duration::from_millis(1);

/// One tenant's data in the table. Plain integers only (`repr(C)`), so any byte pattern is a
/// valid value and a torn write by a killed process cannot cause unsafety.
///
/// `Default` is written by hand because [`Limit`] has none: both limits unlimited, buckets
/// and counters zero, `limits_generation` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct TenantState {
    /// The [`SharedTable::limits_generation`] the limits below were loaded from.
    pub limits_generation: u64,
    pub request_limit: Limit,
    pub request_bucket: Bucket,
    pub ingestion_limit: Limit,
    pub ingestion_bucket: Bucket,
    pub allowed_requests: u64,
    pub denied_requests: u64,
    pub allowed_samples: u64,
    pub denied_samples: u64,
    /// Requests a dry-run limit would have denied.
    pub would_deny_requests: u64,
    pub last_seen_ns: u64,
    pub flags: u64,
}

impl Default for TenantState {
    fn default() -> Self {
        Self {
            limits_generation: 0,
            request_limit: Limit::unlimited(),
            request_bucket: Bucket::default(),
            ingestion_limit: Limit::unlimited(),
            ingestion_bucket: Bucket::default(),
            allowed_requests: 0,
            denied_requests: 0,
            allowed_samples: 0,
            denied_samples: 0,
            would_deny_requests: 0,
            last_seen_ns: 0,
            flags: 0,
        }
    }
}

#[derive(Debug)]
pub enum TableError {
    /// The tenant ID is longer than [`MAX_KEY_LEN`] bytes.
    KeyTooLong { len: usize, max: usize },
    /// No room for another tenant (`entries` of `capacity` slots taken, the cap is ~90 %).
    Full { capacity: usize, entries: u64 },
    /// `create` was given a capacity that is zero, not a power of two or too large.
    BadCapacity { capacity: usize },
    /// `create` found a file at the path (use `replace` to start over).
    Exists { path: PathBuf },
    /// A system call failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The file does not start with [`MAGIC`]: not a table, or not finished.
    BadMagic { path: PathBuf, found: u64 },
    /// The file was made by another layout version of this code.
    BadVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// Slot size, header size or capacity in the header do not match this build.
    BadLayout { path: PathBuf, detail: String },
    /// The file's size is not what its header says (or is smaller than a header).
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// The mapping is not aligned for the atomics in it.
    Misaligned { path: PathBuf, addr: usize },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyTooLong { len, max } => {
                write!(f, "tenant ID too long: {len} bytes, at most {max}")
            }
            Self::Full { capacity, entries } => write!(
                f,
                "shared tenant table full: {entries} tenants in {capacity} slots"
            ),
            Self::BadCapacity { capacity } => write!(
                f,
                "bad table capacity {capacity}: must be a power of two between 1 and {MAX_CAPACITY}"
            ),
            Self::Exists { path } => write!(
                f,
                "shared tenant table {} already exists (replace it to start over)",
                path.display()
            ),
            Self::Io { op, path, source } => {
                write!(f, "shared tenant table {}: {op}: {source}", path.display())
            }
            Self::BadMagic { path, found } => write!(
                f,
                "{} is not a mimir-edge tenant table (magic {found:#018x}, expected {MAGIC:#018x})",
                path.display()
            ),
            Self::BadVersion {
                path,
                found,
                expected,
            } => write!(
                f,
                "shared tenant table {} has layout version {found}, this build uses {expected}",
                path.display()
            ),
            Self::BadLayout { path, detail } => {
                write!(f, "shared tenant table {}: {detail}", path.display())
            }
            Self::SizeMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "shared tenant table {} is {actual} bytes, expected {expected}",
                path.display()
            ),
            Self::Misaligned { path, addr } => write!(
                f,
                "shared tenant table {} mapped at {addr:#x}, not 64-byte aligned",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Layout.
// ------------------------------------------------------------------------------------------

#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    slot_size: AtomicU32,
    capacity: AtomicU64,
    header_size: AtomicU64,
    limits_generation: AtomicU64,
    limits_updated_unix_ns: AtomicU64,
    /// Slots taken (INIT or READY). May over-count by one per inserter killed at the wrong
    /// instant; never under-counts.
    len: AtomicU64,
    /// Locks taken over from dead holders.
    lock_recoveries: AtomicU64,
    worker_requests: [AtomicU64; WORKER_SLOTS],
    counters: [AtomicU64; COUNTERS],
}

#[repr(C)]
struct Key {
    len: u32,
    hash: u32,
    bytes: [u8; KEY_BYTES],
}

#[repr(C, align(64))]
struct Slot {
    state: AtomicU32,
    /// Holder's PID, 0 = free.
    lock: AtomicU32,
    /// Written only under `lock` while `state != READY`; immutable once READY.
    key: UnsafeCell<Key>,
    /// Read and written only under `lock`.
    data: UnsafeCell<TenantState>,
}

const _: () = {
    assert!(std::mem::size_of::<TenantState>() == 128);
    assert!(std::mem::size_of::<Slot>() == SLOT_SIZE);
    assert!(SLOT_SIZE <= 512);
    assert!(SLOT_SIZE % 64 == 0);
    assert!(std::mem::align_of::<Slot>() == 64);
    assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);
    assert!(std::mem::align_of::<Header>() <= 64);
    assert!(HEADER_SIZE % 64 == 0);
    assert!(MAX_KEY_LEN <= KEY_BYTES);
};

/// File size for `capacity` slots.
pub const fn file_size(capacity: usize) -> u64 {
    (HEADER_SIZE as u64) + (capacity as u64) * (SLOT_SIZE as u64)
}

/// Load cap: new tenants are refused once this many slots are taken.
pub const fn max_entries(capacity: usize) -> usize {
    capacity - capacity / 10
}

/// FNV-1a 64 with a murmur3 `fmix64` finalizer (FNV's low bits, which pick the slot, are
/// weak for keys differing only in their last byte). Fixed constants: the same in every
/// process and every build.
pub fn hash_key(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

// ------------------------------------------------------------------------------------------
// PIDs.
// ------------------------------------------------------------------------------------------

/// This process's PID, cached; 0 = not known yet. A `pthread_atfork` child handler resets it,
/// so a process forked after opening the table locks under its own PID.
static PID: AtomicU32 = AtomicU32::new(0);
static ATFORK: Once = Once::new();

extern "C" fn forget_pid_after_fork() {
    PID.store(0, Ordering::Relaxed);
}

fn current_pid() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    ATFORK.call_once(|| {
        // SAFETY: the handler only stores to a static atomic, which is async-signal-safe
        // as a forked child's handler must be. A failure to register (ENOMEM) only means a
        // forked child would lock under its parent's PID, which delays recovery from its
        // death but never breaks mutual exclusion.
        unsafe {
            libc::pthread_atfork(None, None, Some(forget_pid_after_fork));
        }
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// Whether the process `pid` may still run (and so may still hold a lock). Unknown → alive.
pub fn process_alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false; // not a PID any process can have: a garbage lock word
    };
    if raw <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(raw, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    // A killed process that is not reaped yet still answers kill(); it is a zombie and
    // will never run again (its PID cannot be reused before it is reaped).
    !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": comm may contain spaces and parentheses; the state follows the
    // last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.trim_start().chars().next());
    matches!(state, Some('Z' | 'X'))
}

// ------------------------------------------------------------------------------------------
// The table.
// ------------------------------------------------------------------------------------------

/// A mapping of the shared tenant table. Cheap to share between threads (`Sync`); every
/// process opens its own.
pub struct SharedTable {
    base: NonNull<u8>,
    map_len: usize,
    capacity: usize,
    max_entries: usize,
    path: PathBuf,
}

// SAFETY: the mapping is process-wide memory. All shared mutable state in it is reached
// either through atomics or through `UnsafeCell`s that are accessed only while holding the
// slot's lock (or, for a READY slot's key, only read after the Release/Acquire publication,
// never written again), so sharing `&SharedTable` between threads is sound, and moving it
// to another thread moves nothing thread-bound.
unsafe impl Send for SharedTable {}
// SAFETY: see `Send` above.
unsafe impl Sync for SharedTable {}

impl fmt::Debug for SharedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTable")
            .field("path", &self.path)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl Drop for SharedTable {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly what mmap returned; no reference into the
        // mapping can outlive `self` (they all borrow it).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TableError {
    let path = path.to_path_buf();
    move |source| TableError::Io { op, path, source }
}

/// Maps `len` bytes of `file` shared and read-write.
fn map_file(file: &File, len: usize, path: &Path) -> Result<NonNull<u8>, TableError> {
    // SAFETY: a fresh mapping at an address of the kernel's choosing, of a file at least
    // `len` bytes long (checked by the callers); it aliases no Rust object.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io_err("mmap", path)(io::Error::last_os_error()));
    }
    let Some(base) = NonNull::new(ptr.cast::<u8>()) else {
        return Err(io_err("mmap", path)(io::Error::other("mapped at null")));
    };
    Ok(base)
}

impl SharedTable {
    /// Creates a table of `capacity` slots at `path`; fails with [`TableError::Exists`] if
    /// a file is there. The file is built under a temporary name and linked into place, so
    /// no process ever opens a half-initialized table.
    pub fn create(path: impl AsRef<Path>, capacity: usize) -> Result<Self, TableError> {
        Self::create_impl(path.as_ref(), capacity, false)
    }

    /// Like [`create`](Self::create), but atomically replaces a file already at `path`.
    /// Processes that mapped the old file keep using it (it is unlinked, never truncated,
    /// so they cannot fault) until they reopen.
    pub fn replace(path: impl AsRef<Path>, capacity: usize) -> Result<Self, TableError> {
        Self::create_impl(path.as_ref(), capacity, true)
    }

    fn create_impl(path: &Path, capacity: usize, replace: bool) -> Result<Self, TableError> {
        if capacity == 0 || !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
            return Err(TableError::BadCapacity { capacity });
        }
        if !replace && path.exists() {
            return Err(TableError::Exists {
                path: path.to_path_buf(),
            });
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.{nanos}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);

        let result = Self::build(&tmp, capacity).and_then(|table| {
            let published = if replace {
                std::fs::rename(&tmp, path).map_err(io_err("rename", path))
            } else {
                match std::fs::hard_link(&tmp, path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(TableError::Exists {
                        path: path.to_path_buf(),
                    }),
                    Err(e) => Err(io_err("link", path)(e)),
                }
            };
            published.map(|()| table)
        });
        // After a rename the temporary name is gone already; otherwise drop it.
        let _ = std::fs::remove_file(&tmp);
        let mut table = result?;
        table.path = path.to_path_buf();
        Ok(table)
    }

    fn build(tmp: &Path, capacity: usize) -> Result<Self, TableError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(io_err("create", tmp))?;
        let size = file_size(capacity);
        file.set_len(size).map_err(io_err("ftruncate", tmp))?;
        let map_len = usize::try_from(size).map_err(|_| TableError::BadCapacity { capacity })?;
        let base = map_file(&file, map_len, tmp)?;
        let table = Self {
            base,
            map_len,
            capacity,
            max_entries: max_entries(capacity),
            path: tmp.to_path_buf(),
        };
        table.check_alignment()?;
        // The file is all zeros (every slot EMPTY, every counter 0): only the header needs
        // writing. Nobody else can see the file before it is linked into place.
        let h = table.header();
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.slot_size.store(SLOT_SIZE as u32, Ordering::Relaxed);
        h.capacity.store(capacity as u64, Ordering::Relaxed);
        h.header_size.store(HEADER_SIZE as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(table)
    }

    /// Maps an existing table and validates its header against this build's layout.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TableError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let meta = file.metadata().map_err(io_err("stat", path))?;
        let actual = meta.len();
        if !meta.is_file() || actual < HEADER_SIZE as u64 {
            return Err(TableError::SizeMismatch {
                path: path.to_path_buf(),
                expected: HEADER_SIZE as u64,
                actual,
            });
        }
        let map_len = usize::try_from(actual).map_err(|_| TableError::SizeMismatch {
            path: path.to_path_buf(),
            expected: HEADER_SIZE as u64,
            actual,
        })?;
        let base = map_file(&file, map_len, path)?;
        // From here `table` owns the mapping and unmaps it on every error path.
        let mut table = Self {
            base,
            map_len,
            capacity: 0,
            max_entries: 0,
            path: path.to_path_buf(),
        };
        table.check_alignment()?;
        let h = table.header();
        let magic = h.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(TableError::BadMagic {
                path: path.to_path_buf(),
                found: magic,
            });
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(TableError::BadVersion {
                path: path.to_path_buf(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let slot_size = h.slot_size.load(Ordering::Relaxed);
        let header_size = h.header_size.load(Ordering::Relaxed);
        if slot_size as usize != SLOT_SIZE || header_size != HEADER_SIZE as u64 {
            return Err(TableError::BadLayout {
                path: path.to_path_buf(),
                detail: format!(
                    "slot size {slot_size} and header size {header_size}, this build uses {SLOT_SIZE} and {HEADER_SIZE}"
                ),
            });
        }
        let capacity = h.capacity.load(Ordering::Relaxed);
        let capacity = match usize::try_from(capacity) {
            Ok(c) if c != 0 && c.is_power_of_two() && c <= MAX_CAPACITY => c,
            _ => {
                return Err(TableError::BadLayout {
                    path: path.to_path_buf(),
                    detail: format!(
                        "capacity {capacity} is not a power of two between 1 and {MAX_CAPACITY}"
                    ),
                })
            }
        };
        let expected = file_size(capacity);
        if actual != expected {
            return Err(TableError::SizeMismatch {
                path: path.to_path_buf(),
                expected,
                actual,
            });
        }
        table.capacity = capacity;
        table.max_entries = max_entries(capacity);
        Ok(table)
    }

    fn check_alignment(&self) -> Result<(), TableError> {
        let addr = self.base.as_ptr() as usize;
        if addr % 64 != 0 {
            return Err(TableError::Misaligned {
                path: self.path.clone(),
                addr,
            });
        }
        Ok(())
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked before any call),
        // 64-byte aligned (checked), and every field of `Header` is an atomic for which any
        // bit pattern is valid; shared references to atomics permit concurrent mutation.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    fn slot(&self, index: usize) -> &Slot {
        let index = index & (self.capacity - 1);
        // SAFETY: `index < capacity` and the mapping is `HEADER_SIZE + capacity * SLOT_SIZE`
        // bytes (validated at open/create), so the slot lies inside it; it is 64-byte
        // aligned (base is, and HEADER_SIZE and SLOT_SIZE are multiples of 64). A `Slot` is
        // atomics plus `UnsafeCell`s of plain integers: any bit pattern is valid, and a
        // shared reference permits the mutation through the cells that the lock protocol
        // performs.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(HEADER_SIZE + index * SLOT_SIZE)
                .cast::<Slot>()
        }
    }

    /// The path this table was created at or opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tenants the table accepts before [`TableError::Full`].
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Tenants in the table.
    pub fn len(&self) -> usize {
        let len = self.header().len.load(Ordering::Relaxed);
        usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(self.capacity)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bumped whenever the limit set changes; workers compare it to the generation they
    /// loaded (and each tenant's `TenantState::limits_generation`).
    pub fn limits_generation(&self) -> &AtomicU64 {
        &self.header().limits_generation
    }

    /// Wall-clock time (Unix ns) of the last limits update, for a staleness gauge.
    pub fn limits_updated_unix_ns(&self) -> &AtomicU64 {
        &self.header().limits_updated_unix_ns
    }

    /// Records a change of the limit set: stores `now_unix_ns` and bumps the generation,
    /// returning the new one.
    pub fn bump_limits_generation(&self, now_unix_ns: u64) -> u64 {
        let h = self.header();
        h.limits_updated_unix_ns
            .store(now_unix_ns, Ordering::Relaxed);
        h.limits_generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Requests handled by worker `worker` (`None` past [`WORKER_SLOTS`]).
    pub fn worker_requests(&self, worker: usize) -> Option<&AtomicU64> {
        self.header().worker_requests.get(worker)
    }

    /// Global counter `i` (`None` past [`COUNTERS`]); the engine assigns the indices.
    pub fn counter(&self, i: usize) -> Option<&AtomicU64> {
        self.header().counters.get(i)
    }

    /// Slot locks taken over from dead holders since the table was created.
    pub fn lock_recoveries(&self) -> u64 {
        self.header().lock_recoveries.load(Ordering::Relaxed)
    }

    /// Finds or inserts `tenant` (initialized with `init()`, called at most once, under the
    /// slot lock) and runs `f` on its state under the slot's lock. `f` must be short and must
    /// not call back into the table for the same tenant. On [`TableError::Full`], `init` is
    /// normally not called (it is, and its result dropped, if the table fills up between the
    /// check and the reservation).
    pub fn with_tenant<R>(
        &self,
        tenant: &[u8],
        init: impl FnOnce() -> TenantState,
        f: impl FnOnce(&mut TenantState) -> R,
    ) -> Result<R, TableError> {
        check_key(tenant)?;
        let hash = hash_key(tenant);
        let hash32 = (hash >> 32) as u32; // the low bits pick the slot
        let start = hash as usize;
        for step in 0..self.capacity {
            let slot = self.slot(start.wrapping_add(step));
            if slot.state.load(Ordering::Acquire) == READY {
                if slot.key_is(tenant, hash32) {
                    let mut guard = self.lock(slot);
                    return Ok(f(guard.data()));
                }
                continue;
            }
            // Not READY: decide under the lock.
            let mut guard = self.lock(slot);
            let state = slot.state.load(Ordering::Acquire);
            if state == READY {
                if slot.key_is(tenant, hash32) {
                    return Ok(f(guard.data()));
                }
                continue;
            }
            // EMPTY, or INIT left by a dead inserter (or garbage): `tenant` goes here, the
            // first non-READY slot of its probe sequence.
            if state == EMPTY
                && self.header().len.load(Ordering::Relaxed) >= self.max_entries as u64
            {
                return Err(self.full());
            }
            let data = init();
            if state == EMPTY {
                self.reserve_entry()?;
            }
            slot.state.store(INIT, Ordering::Relaxed);
            guard.write_key(tenant, hash32);
            *guard.data() = data;
            slot.state.store(READY, Ordering::Release);
            return Ok(f(guard.data()));
        }
        Err(self.full())
    }

    /// A copy of `tenant`'s state, taken under its lock; `None` if it is not in the table.
    pub fn get(&self, tenant: &[u8]) -> Result<Option<TenantState>, TableError> {
        check_key(tenant)?;
        let hash = hash_key(tenant);
        let hash32 = (hash >> 32) as u32; // the low bits pick the slot
        let start = hash as usize;
        for step in 0..self.capacity {
            let slot = self.slot(start.wrapping_add(step));
            let mut guard;
            if slot.state.load(Ordering::Acquire) != READY {
                guard = self.lock(slot);
                if slot.state.load(Ordering::Acquire) != READY {
                    return Ok(None); // where `tenant` would be inserted
                }
            } else if slot.key_is(tenant, hash32) {
                guard = self.lock(slot);
            } else {
                continue;
            }
            if slot.key_is(tenant, hash32) {
                return Ok(Some(*guard.data()));
            }
        }
        Ok(None)
    }

    /// Calls `f` with each tenant's ID and a consistent copy of its state (copied under the
    /// slot's lock; `f` runs with no lock held). Tenants inserted meanwhile may be missed.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], TenantState)) {
        let mut key = [0u8; KEY_BYTES];
        for index in 0..self.capacity {
            let slot = self.slot(index);
            if slot.state.load(Ordering::Acquire) != READY {
                continue;
            }
            let len = slot.copy_key(&mut key);
            let data = *self.lock(slot).data();
            if let Some(k) = key.get(..len) {
                f(k, data);
            }
        }
    }

    fn reserve_entry(&self) -> Result<(), TableError> {
        let len = &self.header().len;
        let max = self.max_entries as u64;
        len.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .map(|_| ())
        .map_err(|_| self.full())
    }

    fn full(&self) -> TableError {
        TableError::Full {
            capacity: self.capacity,
            entries: self.header().len.load(Ordering::Relaxed),
        }
    }

    /// Takes `slot`'s lock, stealing it from a dead holder.
    fn lock<'a>(&'a self, slot: &'a Slot) -> SlotGuard<'a> {
        let me = current_pid();
        let mut spins = 0u32;
        let mut next_check: Option<Instant> = None;
        loop {
            let holder = slot.lock.load(Ordering::Relaxed);
            if holder == 0 {
                if slot
                    .lock
                    .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return SlotGuard { slot, me };
                }
                continue;
            }
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            match next_check {
                None => next_check = Some(now + LIVENESS_CHECK_EVERY),
                Some(at) if now >= at => {
                    if holder != me && !process_alive(holder) {
                        if slot
                            .lock
                            .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                        {
                            self.header()
                                .lock_recoveries
                                .fetch_add(1, Ordering::Relaxed);
                            return SlotGuard { slot, me };
                        }
                        continue;
                    }
                    next_check = Some(now + LIVENESS_CHECK_EVERY);
                }
                Some(_) => {}
            }
            std::thread::yield_now();
        }
    }
}

fn check_key(tenant: &[u8]) -> Result<(), TableError> {
    if tenant.len() > MAX_KEY_LEN {
        return Err(TableError::KeyTooLong {
            len: tenant.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

impl Slot {
    /// Whether this READY slot (or one whose lock the caller holds) holds `key`. The length
    /// read from the file is never trusted for indexing.
    fn key_is(&self, key: &[u8], hash32: u32) -> bool {
        // SAFETY: the key is written only under the lock while the slot is not READY; the
        // callers either hold the lock or saw READY with Acquire, after which it is never
        // written again. `Key` is plain integers: any bit pattern is valid.
        let stored = unsafe { &*self.key.get() };
        stored.hash == hash32
            && stored.len as usize == key.len()
            && stored.bytes.get(..key.len()) == Some(key)
    }

    /// Copies the key of a READY slot into `out`, returning its length (clamped).
    fn copy_key(&self, out: &mut [u8; KEY_BYTES]) -> usize {
        // SAFETY: as in `key_is`: the slot is READY (seen with Acquire), so its key is no
        // longer written.
        let stored = unsafe { &*self.key.get() };
        *out = stored.bytes;
        (stored.len as usize).min(MAX_KEY_LEN)
    }
}

/// A held slot lock; released on drop (also when `f` panics).
struct SlotGuard<'a> {
    slot: &'a Slot,
    me: u32,
}

impl SlotGuard<'_> {
    fn data(&mut self) -> &mut TenantState {
        // SAFETY: the slot's lock is held by this guard (and `&mut self` makes the borrow
        // unique within this process), so no one else reads or writes the state.
        unsafe { &mut *self.slot.data.get() }
    }

    fn write_key(&mut self, key: &[u8], hash32: u32) {
        // SAFETY: the lock is held and the slot is not READY, so no one reads the key.
        let stored = unsafe { &mut *self.slot.key.get() };
        let mut bytes = [0u8; KEY_BYTES];
        if let Some(dst) = bytes.get_mut(..key.len()) {
            dst.copy_from_slice(key);
        }
        *stored = Key {
            len: key.len() as u32,
            hash: hash32,
            bytes,
        };
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        // Only release a lock still ours (it could have been stolen if our PID was taken
        // for dead, which the liveness check rules out within one PID namespace).
        let _ = self
            .slot
            .lock
            .compare_exchange(self.me, 0, Ordering::Release, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn layout_is_stable() {
        assert_eq!(std::mem::size_of::<Slot>(), 320);
        assert_eq!(std::mem::offset_of!(Slot, key), 8);
        assert_eq!(std::mem::offset_of!(Slot, data), 168);
        assert_eq!(std::mem::offset_of!(Header, worker_requests), 64);
        assert_eq!(std::mem::offset_of!(Header, counters), 64 + 8 * 64);
        assert_eq!(file_size(DEFAULT_CAPACITY), 4096 + 65_536 * 320);
        assert_eq!(max_entries(DEFAULT_CAPACITY), 58_983);
        assert_eq!(max_entries(8), 8);
    }

    #[test]
    fn hash_is_fixed() {
        // Pinned: every process and every build must place a tenant in the same slot.
        // Pinned (computed independently): every process and every build must place a
        // tenant in the same slot.
        assert_eq!(hash_key(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash_key(b"tenant-1"), 0x27a4_a8c6_e79b_9950);
        assert_eq!(hash_key(&[b'a'; 150]), 0x70a0_9941_1f4e_dcdf);
    }

    #[test]
    fn liveness() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
        // Above the kernel's pid_max (at most 2^22): no such process.
        assert!(!process_alive(1 << 30));
    }

    #[test]
    fn pid_cache_is_reset_in_a_forked_child() {
        let parent = current_pid();
        assert_eq!(parent, std::process::id());
        // SAFETY: the child only calls async-signal-safe functions (getpid, atomics, _exit)
        // before exiting; it never returns into the test harness.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let ok = current_pid() == std::process::id() && current_pid() != parent;
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid out-pointer.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!(rc, child);
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0, "child saw a stale PID");
    }
}
