//! The host-assisted sparse copy used by `dir` clones and the DataVolume importer.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use storage::{allocated_bytes, sparse_copy};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Writes `chunks` pseudo-random chunks of `chunk` bytes spread evenly over a sparse file.
fn make_sparse(path: &Path, size: u64, chunks: u64, chunk: u64) {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create");
    f.set_len(size).expect("size");
    let stride = size / chunks;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..chunks {
        let buf: Vec<u8> = (0..chunk)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        f.write_all_at(&buf, i * stride + 4096).expect("write");
    }
    f.sync_all().expect("fsync");
}

fn same_content(a: &Path, b: &Path, size: u64, chunks: u64, chunk: u64) {
    let (fa, fb) = (File::open(a).expect("open"), File::open(b).expect("open"));
    let stride = size / chunks;
    let (mut ba, mut bb) = (
        vec![0u8; (chunk + 8192) as usize],
        vec![0u8; (chunk + 8192) as usize],
    );
    for i in 0..chunks {
        fa.read_exact_at(&mut ba, i * stride).expect("read");
        fb.read_exact_at(&mut bb, i * stride).expect("read");
        assert!(ba == bb, "chunk {i} differs");
    }
    // Probe some holes too.
    for off in [stride / 2, size - 4096, size / 3 + 12345] {
        let mut h = [1u8; 4096];
        fb.read_exact_at(&mut h, off.min(size - 4096))
            .expect("read");
        let mut o = [1u8; 4096];
        fa.read_exact_at(&mut o, off.min(size - 4096))
            .expect("read");
        assert_eq!(h, o);
    }
}

#[test]
fn sparse_copy_of_20g_with_300m_of_data_stays_sparse() {
    let dir = std::env::temp_dir().join(format!("vmsnap-sparse-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("mkdir");
    let (src, dst) = (dir.join("src.img"), dir.join("dst.img"));
    let (size, chunks, chunk) = (20 * GIB, 60, 5 * MIB);
    make_sparse(&src, size, chunks, chunk);
    let src_alloc = allocated_bytes(&src).expect("alloc");
    assert!((300 * MIB..310 * MIB).contains(&src_alloc), "{src_alloc}");

    let seen = Mutex::new(Vec::new());
    let progress = |done: u64, total: u64| seen.lock().expect("lock").push((done, total));
    let stats = sparse_copy(&src, &dst, &progress).expect("copy");
    assert_eq!(stats.size, size);
    // Unaligned chunks round out to whole filesystem blocks.
    assert!(
        stats.data_bytes >= 300 * MIB && stats.data_bytes <= 300 * MIB + chunks * 8192,
        "{}",
        stats.data_bytes
    );
    assert_eq!(fs::metadata(&dst).expect("stat").len(), size);
    let dst_alloc = allocated_bytes(&dst).expect("alloc");
    println!(
        "source allocated {src_alloc}, copy allocated {dst_alloc} ({:.3}x), {} extents in {:?}",
        dst_alloc as f64 / src_alloc as f64,
        stats.extents,
        stats.elapsed
    );
    assert!(
        (dst_alloc as f64) < 1.05 * src_alloc as f64,
        "copy allocated {dst_alloc} vs source {src_alloc}"
    );
    same_content(&src, &dst, size, chunks, chunk);

    let seen = seen.into_inner().expect("lock");
    assert!(seen.len() >= 3, "progress updates: {}", seen.len());
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress is monotonic"
    );
    assert_eq!(
        *seen.last().expect("progress"),
        (stats.data_bytes, stats.data_bytes)
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn sparse_copy_of_a_missing_file_fails_and_creates_nothing() {
    let dir = std::env::temp_dir().join(format!("vmsnap-sparse-missing-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("mkdir");
    let e = sparse_copy(&dir.join("nope"), &dir.join("dst"), &storage::NoProgress)
        .expect_err("missing source");
    assert_eq!(e.kind(), storage::ErrorKind::NotFound);
    assert!(!dir.join("dst").exists());
    let _ = fs::remove_dir_all(&dir);
}
