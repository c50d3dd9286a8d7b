//! The shared tenant table (src/shm.rs) against its contract: files are validated, tenants
//! are found and inserted (also with forced collisions), a full table and a too-long key are
//! refused, and the limit holds exactly however many threads or processes hammer it.
//!
//! Multi-process tests re-exec this test binary with `--exact child_process_entry` and
//! `MIMIR_EDGE_SHM_CHILD=<role>`; `child_process_entry` does nothing without that variable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mimir_edge_native::bucket::{Bucket, Decision, Limit};
use mimir_edge_native::shm::{
    file_size, hash_key, SharedTable, TableError, TenantState, COUNTERS, DEFAULT_CAPACITY,
    HEADER_SIZE, MAX_CAPACITY, MAX_KEY_LEN, SLOT_SIZE, WORKER_SLOTS,
};

// ------------------------------------------------------------------------------------------
// Helpers.
// ------------------------------------------------------------------------------------------

/// A unique path under /dev/shm (or the temp dir), removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self(dir.join(format!("mimir-edge-test-{}-{name}-{n}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn limited(burst: u64) -> TenantState {
    let limit = Limit::new(1.0, burst).unwrap();
    TenantState {
        request_limit: limit,
        request_bucket: Bucket::full(limit, 0),
        ..TenantState::default()
    }
}

/// One request at the frozen time 0; counts it in the state.
fn take_one(s: &mut TenantState) -> bool {
    let allowed = s.request_bucket.take(s.request_limit, 0, 1) == Decision::Allow;
    if allowed {
        s.allowed_requests += 1;
    } else {
        s.denied_requests += 1;
    }
    allowed
}

fn all_tenants(table: &SharedTable) -> BTreeMap<Vec<u8>, TenantState> {
    let mut out = BTreeMap::new();
    table.for_each(|k, s| {
        assert!(out.insert(k.to_vec(), s).is_none(), "tenant listed twice");
    });
    out
}

/// Writes `bytes` at `offset` of the file (tmpfs writes are coherent with mappings).
fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit`.
fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

// ------------------------------------------------------------------------------------------
// Files: create, open, validate.
// ------------------------------------------------------------------------------------------

#[test]
fn open_maps_the_same_table() {
    let p = TempPath::new("same");
    let a = SharedTable::create(&p.0, 64).unwrap();
    assert_eq!(a.capacity(), 64);
    assert!(a.is_empty());
    let b = SharedTable::open(&p.0).unwrap();
    assert_eq!(b.capacity(), 64);
    assert_eq!(
        std::fs::metadata(&p.0).unwrap().len(),
        file_size(64),
        "header + 64 slots"
    );

    a.with_tenant(b"t1", || limited(10), |s| s.flags = 7)
        .unwrap();
    let seen = b.get(b"t1").unwrap().unwrap();
    assert_eq!(seen.flags, 7);
    assert_eq!(seen.request_limit.burst(), 10);
    assert_eq!(b.len(), 1);

    a.counter(5).unwrap().fetch_add(3, Ordering::Relaxed);
    assert_eq!(b.counter(5).unwrap().load(Ordering::Relaxed), 3);
    assert!(b.counter(COUNTERS - 1).is_some());
    assert!(b.counter(COUNTERS).is_none());
    b.worker_requests(63)
        .unwrap()
        .fetch_add(1, Ordering::Relaxed);
    assert_eq!(a.worker_requests(63).unwrap().load(Ordering::Relaxed), 1);
    assert!(a.worker_requests(WORKER_SLOTS).is_none());

    assert_eq!(a.limits_generation().load(Ordering::Relaxed), 0);
    assert_eq!(a.bump_limits_generation(1_700_000_000_000_000_000), 1);
    assert_eq!(b.limits_generation().load(Ordering::Acquire), 1);
    assert_eq!(
        b.limits_updated_unix_ns().load(Ordering::Relaxed),
        1_700_000_000_000_000_000
    );
}

#[test]
fn default_size_table_is_sparse_until_touched() {
    use std::os::unix::fs::MetadataExt;
    let p = TempPath::new("sparse");
    let t = SharedTable::create(&p.0, DEFAULT_CAPACITY).unwrap();
    for i in 0..10 {
        t.with_tenant(format!("s{i}").as_bytes(), TenantState::default, |_| ())
            .unwrap();
    }
    let meta = std::fs::metadata(&p.0).unwrap();
    assert_eq!(meta.len(), 4096 + 65_536 * 320);
    // Header page + one page per tenant, not 20 MiB (st_blocks counts 512-byte units).
    let resident = meta.blocks() * 512;
    assert!(resident <= 11 * 4096, "{resident} bytes allocated");
}

#[test]
fn create_refuses_an_existing_file_and_replace_starts_over() {
    let p = TempPath::new("exists");
    let old = SharedTable::create(&p.0, 16).unwrap();
    old.with_tenant(b"t", TenantState::default, |s| s.flags = 1)
        .unwrap();
    let err = SharedTable::create(&p.0, 16).unwrap_err();
    assert!(matches!(err, TableError::Exists { .. }), "{err:?}");
    assert!(err.to_string().contains("already exists"), "{err}");
    // A plain file is not overwritten either.
    let q = TempPath::new("exists-plain");
    std::fs::write(&q.0, b"hello").unwrap();
    assert!(matches!(
        SharedTable::create(&q.0, 16),
        Err(TableError::Exists { .. })
    ));
    assert_eq!(std::fs::read(&q.0).unwrap(), b"hello");

    let new = SharedTable::replace(&p.0, 32).unwrap();
    assert_eq!(new.capacity(), 32);
    assert!(new.get(b"t").unwrap().is_none());
    assert_eq!(SharedTable::open(&p.0).unwrap().capacity(), 32);
    // The old mapping still works (its file was unlinked, not truncated).
    assert_eq!(old.get(b"t").unwrap().unwrap().flags, 1);
    // No temporary files left behind.
    let dir = p.0.parent().unwrap();
    let stem = p.0.file_name().unwrap().to_str().unwrap().to_owned();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&stem) && n != &stem)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn create_refuses_bad_capacities() {
    let p = TempPath::new("capacity");
    for capacity in [0, 3, 100, MAX_CAPACITY * 2] {
        let err = SharedTable::create(&p.0, capacity).unwrap_err();
        assert!(
            matches!(err, TableError::BadCapacity { capacity: c } if c == capacity),
            "{err:?}"
        );
        assert!(err.to_string().contains("power of two"), "{err}");
    }
    assert!(!p.0.exists());
    assert_eq!(SharedTable::create(&p.0, 1).unwrap().capacity(), 1);
}

#[test]
fn open_refuses_a_missing_file() {
    let p = TempPath::new("missing");
    let err = SharedTable::open(&p.0).unwrap_err();
    assert!(matches!(err, TableError::Io { op: "open", .. }), "{err:?}");
}

#[test]
fn open_refuses_bad_magic() {
    let p = TempPath::new("magic");
    drop(SharedTable::create(&p.0, 16).unwrap());
    poke(&p.0, 0, b"NOTATABL");
    let err = SharedTable::open(&p.0).unwrap_err();
    assert!(matches!(err, TableError::BadMagic { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is not a mimir-edge tenant table"),
        "{err}"
    );
    // A file of zeros (as left by a bare ftruncate) is refused the same way.
    let z = TempPath::new("zeros");
    std::fs::File::create(&z.0)
        .unwrap()
        .set_len(file_size(16))
        .unwrap();
    assert!(matches!(
        SharedTable::open(&z.0),
        Err(TableError::BadMagic { found: 0, .. })
    ));
}

#[test]
fn open_refuses_another_layout_version() {
    let p = TempPath::new("version");
    drop(SharedTable::create(&p.0, 16).unwrap());
    poke(&p.0, 8, &99u32.to_le_bytes());
    let err = SharedTable::open(&p.0).unwrap_err();
    assert!(
        matches!(
            err,
            TableError::BadVersion {
                found: 99,
                expected: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("layout version 99"), "{err}");
}

#[test]
fn open_refuses_another_slot_size_or_capacity() {
    let p = TempPath::new("slot");
    drop(SharedTable::create(&p.0, 16).unwrap());
    poke(&p.0, 12, &256u32.to_le_bytes());
    let err = SharedTable::open(&p.0).unwrap_err();
    assert!(matches!(err, TableError::BadLayout { .. }), "{err:?}");
    assert!(err.to_string().contains("slot size 256"), "{err}");

    let q = TempPath::new("cap");
    drop(SharedTable::create(&q.0, 16).unwrap());
    poke(&q.0, 16, &12u64.to_le_bytes());
    let err = SharedTable::open(&q.0).unwrap_err();
    assert!(matches!(err, TableError::BadLayout { .. }), "{err:?}");
    assert!(err.to_string().contains("capacity 12"), "{err}");
}

#[test]
fn open_refuses_a_file_of_the_wrong_size() {
    let p = TempPath::new("size");
    drop(SharedTable::create(&p.0, 16).unwrap());
    // Header says 16 slots, file holds 15: mapping it would fault on the last slot.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p.0)
        .unwrap()
        .set_len(file_size(15))
        .unwrap();
    let err = SharedTable::open(&p.0).unwrap_err();
    assert!(
        matches!(err, TableError::SizeMismatch { expected, actual, .. }
            if expected == file_size(16) && actual == file_size(15)),
        "{err:?}"
    );
    assert!(err.to_string().contains("expected"), "{err}");
    // Shorter than a header, and empty.
    for len in [10, 0] {
        std::fs::File::create(&p.0).unwrap().set_len(len).unwrap();
        assert!(matches!(
            SharedTable::open(&p.0),
            Err(TableError::SizeMismatch { actual, .. }) if actual == len
        ));
    }
}

// ------------------------------------------------------------------------------------------
// Tenants.
// ------------------------------------------------------------------------------------------

#[test]
fn insert_then_find() {
    let p = TempPath::new("insert");
    let t = SharedTable::create(&p.0, 1024).unwrap();
    let mut inits = 0;
    for round in 0..3u64 {
        for i in 0..100u64 {
            let key = format!("tenant-{i}");
            let seen = t
                .with_tenant(
                    key.as_bytes(),
                    || {
                        inits += 1;
                        TenantState {
                            flags: i,
                            ..TenantState::default()
                        }
                    },
                    |s| {
                        s.allowed_requests += 1;
                        (s.flags, s.allowed_requests)
                    },
                )
                .unwrap();
            assert_eq!(seen, (i, round + 1));
        }
    }
    assert_eq!(inits, 100, "init runs once per tenant");
    assert_eq!(t.len(), 100);
    assert!(t.get(b"tenant-100").unwrap().is_none());
    let all = all_tenants(&t);
    assert_eq!(all.len(), 100);
    for (k, s) in &all {
        let i: u64 = std::str::from_utf8(k).unwrap()[7..].parse().unwrap();
        assert_eq!((s.flags, s.allowed_requests), (i, 3));
    }
    // The empty ID and a 150-byte ID are tenants like any other.
    t.with_tenant(b"", TenantState::default, |s| s.flags = 1)
        .unwrap();
    let long = [b'x'; MAX_KEY_LEN];
    t.with_tenant(&long, TenantState::default, |s| s.flags = 2)
        .unwrap();
    assert_eq!(t.get(b"").unwrap().unwrap().flags, 1);
    assert_eq!(t.get(&long).unwrap().unwrap().flags, 2);
    assert_eq!(t.len(), 102);
}

#[test]
fn key_too_long_is_refused() {
    let p = TempPath::new("long");
    let t = SharedTable::create(&p.0, 16).unwrap();
    let key = [b'x'; MAX_KEY_LEN + 1];
    let err = t
        .with_tenant(&key, || unreachable!(), |_| unreachable!())
        .unwrap_err();
    assert!(
        matches!(err, TableError::KeyTooLong { len: 151, max: 150 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("151 bytes"), "{err}");
    assert!(matches!(
        t.get(&key),
        Err(TableError::KeyTooLong { len: 151, .. })
    ));
    assert!(t.is_empty());
}

#[test]
fn collisions_in_a_tiny_table() {
    let p = TempPath::new("collide");
    // 8 slots, 8 tenants: every slot taken, so most tenants are not at their home slot.
    let t = SharedTable::create(&p.0, 8).unwrap();
    assert_eq!(t.max_entries(), 8);
    let homes: Vec<u64> = (0..8)
        .map(|i| hash_key(format!("c{i}").as_bytes()) & 7)
        .collect();
    let distinct: std::collections::BTreeSet<_> = homes.iter().collect();
    assert!(
        distinct.len() < 8,
        "test wants colliding home slots: {homes:?}"
    );
    for i in 0..8u64 {
        t.with_tenant(
            format!("c{i}").as_bytes(),
            || TenantState {
                flags: i,
                ..TenantState::default()
            },
            |_| (),
        )
        .unwrap();
    }
    for i in 0..8u64 {
        let s = t.get(format!("c{i}").as_bytes()).unwrap().unwrap();
        assert_eq!(s.flags, i);
    }
    assert_eq!(all_tenants(&t).len(), 8);
    // A missing key walks the whole (full) table and is not found.
    assert!(t.get(b"absent").unwrap().is_none());
}

#[test]
fn table_full() {
    let p = TempPath::new("full");
    let t = SharedTable::create(&p.0, 16).unwrap();
    // Load cap: 16 - 16 / 10 = 15 tenants.
    assert_eq!(t.max_entries(), 15);
    for i in 0..15 {
        t.with_tenant(format!("f{i}").as_bytes(), TenantState::default, |_| ())
            .unwrap();
    }
    let err = t
        .with_tenant(b"one-too-many", || unreachable!(), |_| unreachable!())
        .unwrap_err();
    assert!(
        matches!(
            err,
            TableError::Full {
                capacity: 16,
                entries: 15
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("full"), "{err}");
    // Known tenants still work when the table is full.
    assert_eq!(
        t.with_tenant(
            b"f3",
            || unreachable!(),
            |s| {
                s.flags = 9;
                s.flags
            }
        )
        .unwrap(),
        9
    );
    assert_eq!(t.len(), 15);

    // A one-slot table takes one tenant.
    let q = TempPath::new("full-1");
    let one = SharedTable::create(&q.0, 1).unwrap();
    one.with_tenant(b"a", TenantState::default, |_| ()).unwrap();
    assert!(matches!(
        one.with_tenant(b"b", TenantState::default, |_| ()),
        Err(TableError::Full {
            capacity: 1,
            entries: 1
        })
    ));
    assert!(one.get(b"b").unwrap().is_none());
}

#[test]
fn threads_hammering_one_tenant_take_exactly_the_burst() {
    const THREADS: usize = 8;
    const ATTEMPTS: usize = 3000;
    const BURST: u64 = 7919;
    let p = TempPath::new("threads");
    let t = Arc::new(SharedTable::create(&p.0, 64).unwrap());
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let t = Arc::clone(&t);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut allowed = 0u64;
                for _ in 0..ATTEMPTS {
                    if t.with_tenant(b"hot", || limited(BURST), take_one).unwrap() {
                        allowed += 1;
                    }
                }
                allowed
            })
        })
        .collect();
    let allowed: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(allowed, BURST);
    let s = t.get(b"hot").unwrap().unwrap();
    assert_eq!(s.allowed_requests, BURST);
    assert_eq!(s.denied_requests, (THREADS * ATTEMPTS) as u64 - BURST);
    assert_eq!(t.len(), 1);
}

#[test]
fn stale_insert_left_by_a_dead_process_is_taken_over() {
    let p = TempPath::new("stale-init");
    let t = SharedTable::create(&p.0, 16).unwrap();
    // Forge what an inserter killed between claiming a slot and publishing it leaves:
    // state INIT, its (dead) PID in the lock word, garbage key.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let home = hash_key(b"ghost") & 15;
    let offset = HEADER_SIZE as u64 + home * SLOT_SIZE as u64;
    let mut forged = Vec::new();
    forged.extend_from_slice(&1u32.to_le_bytes());
    forged.extend_from_slice(&dead_pid.to_le_bytes());
    forged.extend_from_slice(&[0xAB; 64]);
    poke(&p.0, offset, &forged);

    let t = Arc::new(t);
    let t2 = Arc::clone(&t);
    let flags = within(Duration::from_secs(10), move || {
        t2.with_tenant(
            b"ghost",
            || TenantState {
                flags: 5,
                ..TenantState::default()
            },
            |s| s.flags,
        )
        .unwrap()
    });
    assert_eq!(flags, 5);
    assert_eq!(t.lock_recoveries(), 1);
    assert_eq!(t.get(b"ghost").unwrap().unwrap().flags, 5);
    assert_eq!(all_tenants(&t).len(), 1);
}

// ------------------------------------------------------------------------------------------
// Several processes.
// ------------------------------------------------------------------------------------------

const ROLE_VAR: &str = "MIMIR_EDGE_SHM_CHILD";
const PATH_VAR: &str = "MIMIR_EDGE_SHM_PATH";
const INDEX_VAR: &str = "MIMIR_EDGE_SHM_INDEX";
const PROCS_VAR: &str = "MIMIR_EDGE_SHM_PROCS";

const HAMMER_ATTEMPTS: u64 = 4000;
const HAMMER_BURST: u64 = 6151;
const INSERT_TENANTS: usize = 200;
/// Counter index the children use as a start barrier.
const BARRIER_COUNTER: usize = 0;

/// Not a test of its own: the entry point of the child processes the tests below spawn.
/// Without `MIMIR_EDGE_SHM_CHILD` it returns at once.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let path = PathBuf::from(std::env::var(PATH_VAR).unwrap());
    let index: usize = std::env::var(INDEX_VAR).unwrap().parse().unwrap();
    let procs: u64 = std::env::var(PROCS_VAR).unwrap().parse().unwrap();
    let table = SharedTable::open(&path).unwrap();
    let start_together = || {
        let barrier = table.counter(BARRIER_COUNTER).unwrap();
        barrier.fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + Duration::from_secs(60);
        while barrier.load(Ordering::Acquire) < procs {
            assert!(Instant::now() < deadline, "start barrier timed out");
            std::thread::yield_now();
        }
    };
    match role.as_str() {
        "hammer" => {
            start_together();
            let mut allowed = 0u64;
            for _ in 0..HAMMER_ATTEMPTS {
                if table
                    .with_tenant(b"shared-tenant", || limited(HAMMER_BURST), take_one)
                    .unwrap()
                {
                    allowed += 1;
                }
                table
                    .worker_requests(index)
                    .unwrap()
                    .fetch_add(1, Ordering::Relaxed);
            }
            println!("RESULT allowed={allowed}");
        }
        "insert" => {
            // One barrier per tenant, so that all processes insert each tenant at the same
            // moment (one barrier for the whole loop lets the first process run ahead).
            let barrier = table.counter(BARRIER_COUNTER).unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            for i in 0..INSERT_TENANTS {
                barrier.fetch_add(1, Ordering::AcqRel);
                while barrier.load(Ordering::Acquire) < procs * (i as u64 + 1) {
                    assert!(Instant::now() < deadline, "barrier timed out");
                    std::thread::yield_now();
                }
                table
                    .with_tenant(format!("racy-{i}").as_bytes(), TenantState::default, |s| {
                        s.allowed_requests += 1
                    })
                    .unwrap();
            }
            println!("RESULT done");
        }
        "hold" => {
            // Take the tenant's lock and never let go.
            table
                .with_tenant(
                    b"victim",
                    || limited(10),
                    |_| {
                        println!("LOCKED");
                        std::io::stdout().flush().unwrap();
                        std::thread::sleep(Duration::from_secs(120));
                    },
                )
                .unwrap();
        }
        "hold-in-init" => {
            // Die while inserting: the slot is claimed (locked) but never published.
            table
                .with_tenant(
                    b"newcomer",
                    || {
                        println!("LOCKED");
                        std::io::stdout().flush().unwrap();
                        std::thread::sleep(Duration::from_secs(120));
                        TenantState::default()
                    },
                    |_| (),
                )
                .unwrap();
        }
        other => panic!("unknown child role {other}"),
    }
}

/// A child process, SIGKILLed and reaped on drop so a failing test leaves nothing behind.
struct ChildProc(Child);

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(role: &str, path: &Path, index: usize, procs: usize) -> ChildProc {
    ChildProc(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_VAR, role)
            .env(PATH_VAR, path)
            .env(INDEX_VAR, index.to_string())
            .env(PROCS_VAR, procs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// The text after `marker` on the first stdout line holding it. (libtest prints
/// "test child_process_entry ... " before the test runs, so the marker is mid-line.)
fn read_marker(child: &mut ChildProc, marker: &str) -> Option<String> {
    let out = child.0.stdout.take().unwrap();
    BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.find(marker)
                .map(|i| l[i + marker.len()..].trim().to_owned())
        })
}

/// Waits for the child and returns what it printed after `RESULT `.
fn child_result(mut child: ChildProc) -> String {
    // Read to the end: closing the pipe early would fail the child's last writes.
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut out).unwrap();
    let marker = "RESULT ";
    let line = out.lines().find_map(|l| {
        l.find(marker)
            .map(|i| l[i + marker.len()..].trim().to_owned())
    });
    let status = child.0.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    line.expect("child printed no RESULT line")
}

/// Reads the child's stdout until it says it holds the lock.
fn wait_until_locked(child: &mut ChildProc) {
    assert!(
        read_marker(child, "LOCKED").is_some(),
        "child exited before taking the lock"
    );
}

#[test]
fn processes_hammering_one_tenant_take_exactly_the_burst() {
    const PROCS: usize = 4;
    let p = TempPath::new("procs");
    let t = SharedTable::create(&p.0, 1024).unwrap();
    let children: Vec<_> = (0..PROCS)
        .map(|i| spawn_child("hammer", &p.0, i, PROCS))
        .collect();
    let allowed: u64 = children
        .into_iter()
        .map(|c| {
            child_result(c)
                .strip_prefix("allowed=")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    let attempts = PROCS as u64 * HAMMER_ATTEMPTS;
    assert!(attempts > HAMMER_BURST);
    assert_eq!(allowed, HAMMER_BURST, "one limit across all processes");
    let s = t.get(b"shared-tenant").unwrap().unwrap();
    assert_eq!(s.allowed_requests, HAMMER_BURST);
    assert_eq!(s.denied_requests, attempts - HAMMER_BURST);
    assert_eq!(t.len(), 1);
    let per_worker: Vec<u64> = (0..PROCS)
        .map(|i| t.worker_requests(i).unwrap().load(Ordering::Relaxed))
        .collect();
    assert_eq!(per_worker, vec![HAMMER_ATTEMPTS; PROCS]);
}

#[test]
fn processes_inserting_the_same_tenants_end_with_one_slot_each() {
    const PROCS: usize = 4;
    let p = TempPath::new("racy");
    // 256 slots for 200 tenants: long probe sequences, many races on the same slots.
    let t = SharedTable::create(&p.0, 256).unwrap();
    let children: Vec<_> = (0..PROCS)
        .map(|i| spawn_child("insert", &p.0, i, PROCS))
        .collect();
    for c in children {
        assert_eq!(child_result(c), "done");
    }
    assert_eq!(t.len(), INSERT_TENANTS);
    let all = all_tenants(&t);
    assert_eq!(all.len(), INSERT_TENANTS, "each tenant in exactly one slot");
    for i in 0..INSERT_TENANTS {
        let s = &all[format!("racy-{i}").as_bytes()];
        assert_eq!(s.allowed_requests, PROCS as u64, "racy-{i}");
    }
}

#[test]
fn a_process_killed_holding_a_lock_does_not_wedge_the_tenant() {
    let p = TempPath::new("killed");
    let t = Arc::new(SharedTable::create(&p.0, 64).unwrap());
    let mut child = spawn_child("hold", &p.0, 0, 1);
    wait_until_locked(&mut child);
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();

    let t2 = Arc::clone(&t);
    let took = within(Duration::from_secs(10), move || {
        let started = Instant::now();
        let r = t2
            .with_tenant(b"victim", || unreachable!(), take_one)
            .unwrap();
        (r, started.elapsed())
    });
    assert!(took.0, "bucket intact after the holder died");
    assert!(took.1 < Duration::from_secs(1), "recovered in {:?}", took.1);
    assert_eq!(t.lock_recoveries(), 1);
    // And the lock works normally afterwards.
    assert!(t
        .with_tenant(b"victim", || unreachable!(), take_one)
        .unwrap());
    assert_eq!(t.get(b"victim").unwrap().unwrap().allowed_requests, 2);
}

#[test]
fn a_killed_holder_not_yet_reaped_does_not_wedge_the_tenant() {
    // The holder is a zombie (killed, not waited for): kill(pid, 0) still succeeds, so
    // recovery relies on /proc/<pid>/stat.
    let p = TempPath::new("zombie");
    let t = Arc::new(SharedTable::create(&p.0, 64).unwrap());
    let mut child = spawn_child("hold", &p.0, 0, 1);
    wait_until_locked(&mut child);
    child.0.kill().unwrap();

    let t2 = Arc::clone(&t);
    let allowed = within(Duration::from_secs(10), move || {
        t2.with_tenant(b"victim", || unreachable!(), take_one)
            .unwrap()
    });
    assert!(allowed);
    assert_eq!(t.lock_recoveries(), 1);
    child.0.wait().unwrap();
}

#[test]
fn a_process_killed_while_inserting_does_not_wedge_the_slot() {
    let p = TempPath::new("killed-init");
    let t = Arc::new(SharedTable::create(&p.0, 64).unwrap());
    let mut child = spawn_child("hold-in-init", &p.0, 0, 1);
    wait_until_locked(&mut child);
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let t2 = Arc::clone(&t);
    let flags = within(Duration::from_secs(10), move || {
        t2.with_tenant(
            b"newcomer",
            || TenantState {
                flags: 3,
                ..TenantState::default()
            },
            |s| s.flags,
        )
        .unwrap()
    });
    assert_eq!(flags, 3);
    assert_eq!(t.lock_recoveries(), 1);
    assert_eq!(t.len(), 1, "the dead inserter reserved nothing");
    assert_eq!(all_tenants(&t).len(), 1);
}
