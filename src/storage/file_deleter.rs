//! Removing log files without stalling the writes of other logs.
//!
//! Owns how segment files and deleted partitions' directories leave the disk. Freeing a large
//! file's blocks in one go holds the filesystem's journal: on ext4 mounted with `discard`, the
//! commit that frees them waits for the device to discard every block. Measured on the CI VM:
//! deleting a topic with 2 GB of segments kept every other partition's write and fdatasync
//! waiting for 0.56 s. So files are cut down from the end `DELETE_STEP_BYTES` at a time, with a
//! pause between cuts, and unlinked once empty. All of it runs on glommio's blocking thread pool:
//! a shard's executor never waits for it. Knows nothing of partitions beyond file names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::warn;

use super::DELETED_DIR_SUFFIX;

/// Bytes freed by one truncation. Deleting a 2 GB topic under a 100k records/s acks=all
/// producer (CI VM, ext4 with `discard`): in one go, the producer's max latency was 533-587 ms; with
/// 32 MiB steps 113 ms; with 8 MiB steps 21 ms (BENCHMARKS.md, session 5).
pub const DELETE_STEP_BYTES: u64 = 8 << 20;
/// Pause between two truncations of a file being deleted, so that writes of other files get
/// journal commits in between.
pub const DELETE_STEP_PAUSE: Duration = Duration::from_millis(10);

/// A filesystem result where a missing file or directory counts as done.
fn missing_is_done<T: Default>(res: std::io::Result<T>) -> std::io::Result<T> {
    match res {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        other => other,
    }
}

/// Truncates `path` down to nothing `step` bytes at a time, pausing `pause` between cuts, then
/// unlinks it. Blocking: call it from a blocking thread. A missing file is not an error.
pub fn remove_file_gradually(path: &Path, step: u64, pause: Duration) -> std::io::Result<()> {
    assert!(step > 0, "a deletion step frees at least one byte");
    let Some(file) = missing_is_done(std::fs::OpenOptions::new().write(true).open(path).map(Some))? else {
        return Ok(());
    };
    let mut len = file.metadata()?.len();
    while len > step {
        len -= step;
        file.set_len(len)?;
        std::thread::sleep(pause);
    }
    drop(file);
    missing_is_done(std::fs::remove_file(path))
}

/// Removes a directory tree, every file in it gradually. Blocking.
pub fn remove_dir_gradually(dir: &Path, step: u64, pause: Duration) -> std::io::Result<()> {
    let Some(entries) = missing_is_done(std::fs::read_dir(dir).map(Some))? else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_dir_gradually(&e.path(), step, pause)?;
        } else {
            remove_file_gradually(&e.path(), step, pause)?;
        }
    }
    missing_is_done(std::fs::remove_dir(dir))
}

/// Removes files on the executor's blocking thread pool, gradually; warns about those that could
/// not be removed. Runs on a glommio executor; returns when they are gone.
pub async fn remove_files(paths: Vec<PathBuf>) {
    let failed = glommio::executor()
        .spawn_blocking(move || {
            paths
                .into_iter()
                .filter_map(|p| remove_file_gradually(&p, DELETE_STEP_BYTES, DELETE_STEP_PAUSE).err().map(|e| (p, e)))
                .collect::<Vec<_>>()
        })
        .await;
    for (p, e) in failed {
        warn!(file = %p.display(), "cannot remove deleted segment file: {e}");
    }
}

/// Takes a deleted partition's directory out of the way at once (renamed to
/// `<name>.<id>-delete`, as Kafka does, which frees the name for a topic created again right
/// away) and removes it in the background, after an fsync of the parent directory that makes the
/// rename durable (else a crash could bring the old name back, a directory of no topic). A crash
/// before the removal ends leaves the renamed directory, which the next start removes
/// (`remove_deleted_dirs`). Runs on a glommio executor.
pub fn delete_log_dir(dir: &Path) {
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else { return };
    let doomed = dir.with_file_name(format!("{name}.{}{DELETED_DIR_SUFFIX}", uuid::Uuid::new_v4().simple()));
    if let Err(e) = std::fs::rename(dir, &doomed) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!("could not move {} aside for deletion: {e}", dir.display());
        }
        return;
    }
    glommio::spawn_local(async move {
        let path = doomed.clone();
        let res = glommio::executor()
            .spawn_blocking(move || {
                if let Some(parent) = path.parent() {
                    super::segment::sync_dir_blocking(parent)?;
                }
                remove_dir_gradually(&path, DELETE_STEP_BYTES, DELETE_STEP_PAUSE)
            })
            .await;
        if let Err(e) = res {
            warn!("could not remove {}: {e}", doomed.display());
        }
    })
    .detach();
}

/// Removes what deleted partitions left under `data_dir` (directories named with
/// `DELETED_DIR_SUFFIX`), gradually, on a background thread. Returns how many it found.
pub fn remove_deleted_dirs(data_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return 0 };
    let doomed: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && super::is_deleted_dir_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    let n = doomed.len();
    if n > 0 {
        std::thread::Builder::new()
            .name("strand-deleter".into())
            .spawn(move || {
                for d in doomed {
                    if let Err(e) = remove_dir_gradually(&d, DELETE_STEP_BYTES, DELETE_STEP_PAUSE) {
                        warn!("could not remove {}: {e}", d.display());
                    }
                }
            })
            .map_err(|e| warn!("could not start the deleter thread: {e}"))
            .ok();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_cut_down_then_removed_and_a_missing_one_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00000000000000000000.log");
        std::fs::write(&p, vec![7u8; 10_000]).unwrap();
        remove_file_gradually(&p, 3_000, Duration::ZERO).unwrap();
        assert!(!p.exists());
        remove_file_gradually(&p, 3_000, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_tree_is_removed_with_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t-0.abc-delete");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.log"), vec![1u8; 5_000]).unwrap();
        std::fs::write(root.join("sub").join("b.index"), vec![2u8; 100]).unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        remove_dir_gradually(&root, 1_024, Duration::ZERO).unwrap();
        assert!(!root.exists());
        assert!(dir.path().exists());
    }

    #[test]
    fn leftovers_of_deleted_partitions_are_found_and_live_logs_kept() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["t-0", "t-1.0123abcd-delete", "x.y-12.ff-delete", "__groups"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("00000000000000000000.log"), b"x").unwrap();
        }
        assert_eq!(remove_deleted_dirs(dir.path()), 2);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while dir.path().join("t-1.0123abcd-delete").exists() || dir.path().join("x.y-12.ff-delete").exists() {
            assert!(std::time::Instant::now() < deadline, "leftovers not removed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dir.path().join("t-0").exists() && dir.path().join("__groups").exists());
    }
}
