//! Change notifications for files mounted from Kubernetes Secrets and
//! ConfigMaps. Those volumes update by swapping a `..data` symlink in the
//! mount directory, so the parent directories are watched (inotify via
//! `notify`), not the files; a periodic tick backs the watcher up. Callers
//! re-read the files on every tick and act only when the content changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Ticks when something in the directories of `files` changes (bursts are
/// coalesced), and at least every `poll`. Stops with `stop`.
pub fn watch_files(files: &[&str], poll: Duration, stop: CancellationToken) -> anyhow::Result<mpsc::Receiver<()>> {
    let (event_tx, mut events) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = event_tx.try_send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = files.iter().map(|f| parent(f)).collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    let (tick_tx, ticks) = mpsc::channel(1);
    tokio::spawn(async move {
        let _watcher = watcher; // dropped, and so stopped, with this task
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = events.recv() => {
                    // A symlink swap is several events: let them settle.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while events.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(poll) => {}
            }
            if tick_tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok(ticks)
}

fn parent(file: &str) -> PathBuf {
    match Path::new(file).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
