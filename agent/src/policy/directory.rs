//! A directory of ZonePolicy YAML that changes as a whole set: what `zonewall translate -o DIR`
//! and `zonewall sync --output-dir DIR` write, and what a standalone agent (`--policies DIR`)
//! and `zonewall explain --policies DIR` read.
//!
//! A policy split over several objects (one per zone, parts of one zone) is only right when
//! every object comes from the same firewall commit: an agent that read zone A's new egress
//! rules with zone B's old ingress rules would enforce a policy nobody committed. So the
//! objects of one publication live in their own hidden generation directory, and one symlink
//! names the current generation:
//!
//! ```text
//! DIR/.zonewall-current -> .zonewall-generation-<time>-<pid>     (switched with one rename)
//! DIR/.zonewall-generation-<time>-<pid>/firewall-dmz-....yaml    (never changed once published)
//! DIR/firewall-dmz-....yaml -> .zonewall-current/firewall-dmz-....yaml
//! ```
//!
//! A publication writes and syncs every file of the new generation, then renames a fresh
//! symlink over `.zonewall-current` (atomic on POSIX file systems), then updates the visible
//! per-object symlinks (for people and tools that list the directory) and finally removes the
//! generations older than the previous one. The previous generation stays until the next
//! publication, so a reader that resolved the link just before a switch can finish; a reader
//! that loses that race anyway sees a missing file, and [`read_set`] starts over.
//!
//! Readers that know this layout ([`read_set`], and through it
//! [`super::load::load_dir`]) read one generation and never a mix. A plain directory of YAML
//! files (written by hand or by an older zonewall) is still read as it is.
//!
//! One writer per directory: two processes publishing into the same directory at once is not
//! supported (the last switch wins, and each may remove the other's previous generation).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The symlink naming the current generation.
pub const CURRENT_LINK: &str = ".zonewall-current";
/// Name prefix of the generation directories.
pub const GENERATION_PREFIX: &str = ".zonewall-generation-";
/// A file of the writer's own inside a generation (not YAML, so readers skip it): what the
/// writer needs to recognise its files later without parsing them.
pub const MANIFEST_FILE: &str = ".zonewall-manifest";
const TEMPORARY_PREFIX: &str = ".zonewall-tmp-";

/// How often [`read_set`] starts over when a generation disappears while it reads.
const READ_ATTEMPTS: usize = 5;

/// One object's file in a publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectFile {
    /// File name, `<object name>.yaml`.
    pub name: String,
    pub content: String,
}

/// What a publication did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The generation directory now current (a name inside the directory).
    pub generation: String,
    pub files: usize,
    /// Visible file names that an earlier publication had and this one does not.
    pub removed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot {op} {}: {source}; check that the directory is writable and has free space", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to write object file {name:?} into {}: {reason}", dir.display())]
    InvalidName {
        dir: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error(
        "{} is not a symlink; zonewall uses that name to switch policy generations: move it away",
        path.display()
    )]
    NotALink { path: PathBuf },
    #[error(
        "{}: the policy generation kept disappearing while it was read ({READ_ATTEMPTS} attempts); is a writer publishing in a tight loop?",
        dir.display()
    )]
    Unstable { dir: PathBuf },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DirectoryError {
    let path = path.to_path_buf();
    move |source| DirectoryError::Io { op, path, source }
}

fn check_name(dir: &Path, name: &str) -> Result<(), DirectoryError> {
    let reason = if name.is_empty() {
        Some("the name is empty")
    } else if name.starts_with('.') {
        Some("hidden names are reserved for zonewall's generations")
    } else if name.contains('/') || name.contains('\0') {
        Some("the name holds a path separator")
    } else if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
        Some("the name must end in .yaml or .yml")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DirectoryError::InvalidName {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A name no other publication of this process or another one uses.
fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn sync_directory(path: &Path) -> Result<(), DirectoryError> {
    std::fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync", path))
}

/// The generation `.zonewall-current` names, if the directory uses the generation layout.
pub fn current_generation(dir: &Path) -> Result<Option<String>, DirectoryError> {
    let link = dir.join(CURRENT_LINK);
    match std::fs::symlink_metadata(&link) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("inspect", &link)(error)),
        Ok(meta) if !meta.file_type().is_symlink() => {
            return Err(DirectoryError::NotALink { path: link });
        }
        Ok(_) => {}
    }
    let target = std::fs::read_link(&link).map_err(io_error("read the symlink", &link))?;
    Ok(Some(target.to_string_lossy().into_owned()))
}

/// Replaces `path` with a symlink to `target`, atomically (a new link renamed over it).
fn replace_with_symlink(dir: &Path, target: &str, path: &Path) -> Result<(), DirectoryError> {
    let temporary = dir.join(format!("{TEMPORARY_PREFIX}{}", unique_suffix()));
    std::os::unix::fs::symlink(target, &temporary)
        .map_err(io_error("create the symlink", &temporary))?;
    std::fs::rename(&temporary, path).map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        io_error("switch the symlink", path)(source)
    })
}

/// Publishes `files` as the new complete set of `dir` (created if missing).
///
/// Visible files of earlier publications that are not in `files` disappear; so do plain
/// (non-symlink) files whose name starts with `stale_prefix` and ends in `.yaml`, which older
/// zonewall releases wrote directly. Anything else in the directory is left alone. On error
/// the previous set stays current.
pub fn publish(
    dir: &Path,
    files: &[ObjectFile],
    stale_prefix: &str,
) -> Result<Published, DirectoryError> {
    publish_keeping(dir, files, &[], None, stale_prefix)
}

/// [`publish`], with the files named in `keep` taken unchanged from the current generation:
/// linked into the new one (copied where the file system cannot link) rather than written and
/// synced again. A writer that knows which objects changed writes only those. `manifest`, if
/// any, becomes the generation's [`MANIFEST_FILE`] (see [`read_manifest`]).
pub fn publish_keeping(
    dir: &Path,
    files: &[ObjectFile],
    keep: &[String],
    manifest: Option<&str>,
    stale_prefix: &str,
) -> Result<Published, DirectoryError> {
    let mut names = BTreeSet::new();
    for name in files.iter().map(|file| &file.name).chain(keep) {
        check_name(dir, name)?;
        if !names.insert(name.as_str()) {
            return Err(DirectoryError::InvalidName {
                dir: dir.to_path_buf(),
                name: name.clone(),
                reason: "two objects would share this file name",
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(io_error("create the directory", dir))?;
    let previous = current_generation(dir)?;
    if !keep.is_empty() && previous.is_none() {
        return Err(DirectoryError::InvalidName {
            dir: dir.to_path_buf(),
            name: keep[0].clone(),
            reason: "there is no current generation to keep it from",
        });
    }

    let generation = format!("{GENERATION_PREFIX}{}", unique_suffix());
    let generation_path = dir.join(&generation);
    std::fs::create_dir(&generation_path).map_err(io_error(
        "create the generation directory",
        &generation_path,
    ))?;
    let written = (|| {
        for file in files {
            let path = generation_path.join(&file.name);
            let mut handle = std::fs::File::create(&path).map_err(io_error("create", &path))?;
            handle
                .write_all(file.content.as_bytes())
                .and_then(|()| handle.sync_all())
                .map_err(io_error("write", &path))?;
        }
        if let Some(manifest) = manifest {
            let path = generation_path.join(MANIFEST_FILE);
            let mut handle = std::fs::File::create(&path).map_err(io_error("create", &path))?;
            handle
                .write_all(manifest.as_bytes())
                .and_then(|()| handle.sync_all())
                .map_err(io_error("write", &path))?;
        }
        if let Some(previous) = &previous {
            for name in keep {
                let from = dir.join(previous).join(name);
                let to = generation_path.join(name);
                // A published file never changes, so the new generation may share it. The
                // data is already on disk: only the new directory entry needs syncing.
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to)
                        .and_then(|_| std::fs::File::open(&to)?.sync_all())
                        .map_err(io_error("copy the unchanged file", &from))?;
                }
            }
        }
        sync_directory(&generation_path)?;
        replace_with_symlink(dir, &generation, &dir.join(CURRENT_LINK))
    })();
    if let Err(error) = written {
        // Nobody can have read the half-written generation: the link never named it.
        let _ = std::fs::remove_dir_all(&generation_path);
        return Err(error);
    }

    // The set has switched. What follows only tidies the visible view and the disk.
    for name in &names {
        let target = format!("{CURRENT_LINK}/{name}");
        let path = dir.join(name);
        let up_to_date = std::fs::read_link(&path)
            .map(|existing| existing == Path::new(&target))
            .unwrap_or(false);
        if !up_to_date {
            replace_with_symlink(dir, &target, &path)?;
        }
    }
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_error("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("list", dir))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if file_name.starts_with(GENERATION_PREFIX) {
            let keep = file_name == generation || previous.as_deref() == Some(file_name.as_str());
            if !keep && meta.is_dir() {
                std::fs::remove_dir_all(&path)
                    .map_err(io_error("remove the old generation", &path))?;
            }
            continue;
        }
        if file_name.starts_with(TEMPORARY_PREFIX) {
            // Left by a publication that crashed between creating and renaming a link.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if names.contains(file_name.as_str()) {
            continue;
        }
        let ours = if meta.file_type().is_symlink() {
            std::fs::read_link(&path)
                .is_ok_and(|target| target.starts_with(Path::new(CURRENT_LINK)))
        } else {
            meta.is_file() && file_name.starts_with(stale_prefix) && file_name.ends_with(".yaml")
        };
        if ours {
            std::fs::remove_file(&path).map_err(io_error("remove the stale file", &path))?;
            removed.push(file_name);
        }
    }
    sync_directory(dir)?;
    removed.sort();
    Ok(Published {
        generation,
        files: files.len(),
        removed,
    })
}

/// The current generation's [`MANIFEST_FILE`], if the writer left one.
pub fn read_manifest(dir: &Path) -> Result<Option<String>, DirectoryError> {
    let Some(generation) = current_generation(dir)? else {
        return Ok(None);
    };
    let path = dir.join(generation).join(MANIFEST_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error("read", &path)(error)),
    }
}

/// One file of a set as read: where it came from (for error messages) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFile {
    pub path: PathBuf,
    pub text: String,
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// The YAML files of `dir` in name order, as one consistent set: with the generation layout,
/// every file of the current generation plus plain YAML files placed in the directory by
/// other means; otherwise every `*.yaml` / `*.yml` file of the directory.
pub fn read_set(dir: &Path) -> Result<Vec<ReadFile>, DirectoryError> {
    for _ in 0..READ_ATTEMPTS {
        match read_once(dir) {
            Err(DirectoryError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && current_generation(dir).ok().flatten().is_some() =>
            {
                // The generation went away between resolving the link and reading it: a newer
                // one is current now. Start over.
                continue;
            }
            other => return other,
        }
    }
    Err(DirectoryError::Unstable {
        dir: dir.to_path_buf(),
    })
}

fn list_yaml(dir: &Path) -> Result<Vec<PathBuf>, DirectoryError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error("read directory", dir))? {
        let path = entry.map_err(io_error("read directory", dir))?.path();
        if is_yaml(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_once(dir: &Path) -> Result<Vec<ReadFile>, DirectoryError> {
    let generation = current_generation(dir)?;
    let mut files = Vec::new();
    if let Some(generation) = &generation {
        // Resolve once: everything below comes from this generation even if the link moves.
        files.extend(list_yaml(&dir.join(generation))?);
    }
    for path in list_yaml(dir)? {
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        let meta = std::fs::symlink_metadata(&path).map_err(io_error("inspect", &path))?;
        let view_of_generation = meta.file_type().is_symlink()
            && std::fs::read_link(&path)
                .is_ok_and(|target| target.starts_with(Path::new(CURRENT_LINK)));
        if generation.is_some() && (hidden || view_of_generation) {
            continue;
        }
        // Follows other symlinks, as a plain directory read always did.
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io_error("read", &path))?;
        out.push(ReadFile { path, text });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &str) -> ObjectFile {
        ObjectFile {
            name: name.to_string(),
            content: content.to_string(),
        }
    }

    fn visible(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    fn texts(dir: &Path) -> Vec<String> {
        read_set(dir).unwrap().into_iter().map(|f| f.text).collect()
    }

    #[test]
    fn publish_replaces_the_whole_set_and_keeps_foreign_files() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        std::fs::write(dir.join("firewall-legacy.yaml"), "old").unwrap();
        std::fs::write(dir.join("platform-x.yaml"), "hand").unwrap();

        let first = publish(
            &dir,
            &[file("firewall-a.yaml", "a1"), file("firewall-b.yaml", "b1")],
            "firewall-",
        )
        .unwrap();
        assert_eq!(first.removed, ["firewall-legacy.yaml"]);
        assert_eq!(
            visible(&dir),
            [
                "firewall-a.yaml",
                "firewall-b.yaml",
                "notes.txt",
                "platform-x.yaml"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("firewall-a.yaml")).unwrap(),
            "a1"
        );
        assert_eq!(texts(&dir), ["a1", "b1", "hand"]);

        let second = publish(&dir, &[file("firewall-b.yaml", "b2")], "firewall-").unwrap();
        assert_eq!(second.removed, ["firewall-a.yaml"]);
        assert_eq!(texts(&dir), ["b2", "hand"]);
        assert_eq!(
            current_generation(&dir).unwrap().as_deref(),
            Some(second.generation.as_str())
        );

        // The generation before the current one stays for readers still on it; older go.
        let third = publish(&dir, &[file("firewall-c.yaml", "c3")], "firewall-").unwrap();
        let generations: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(GENERATION_PREFIX))
            .collect();
        assert_eq!(
            generations,
            [second.generation, third.generation].into_iter().collect()
        );
        assert_eq!(
            visible(&dir),
            ["firewall-c.yaml", "notes.txt", "platform-x.yaml"]
        );
    }

    #[test]
    fn a_failed_publication_leaves_the_previous_set() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        publish(dir, &[file("firewall-a.yaml", "a1")], "firewall-").unwrap();
        let error = publish(
            dir,
            &[file("firewall-a.yaml", "a2"), file("sub/escape.yaml", "x")],
            "firewall-",
        )
        .unwrap_err();
        assert!(error.to_string().contains("path separator"), "{error}");
        let error = publish(
            dir,
            &[file("firewall-a.yaml", "a2"), file("firewall-a.yaml", "a3")],
            "firewall-",
        )
        .unwrap_err();
        assert!(error.to_string().contains("share"), "{error}");
        assert_eq!(texts(dir), ["a1"]);
    }

    #[test]
    fn plain_directories_still_read() {
        let temp = tempfile::tempdir().unwrap();
        std::fs::write(temp.path().join("b.yml"), "b").unwrap();
        std::fs::write(temp.path().join("a.yaml"), "a").unwrap();
        std::fs::write(temp.path().join("c.txt"), "c").unwrap();
        assert_eq!(texts(temp.path()), ["a", "b"]);
        assert_eq!(current_generation(temp.path()).unwrap(), None);
    }

    #[test]
    fn a_reader_never_sees_a_mixed_set() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let set = |round: usize| -> Vec<ObjectFile> {
            (0..20)
                .map(|index| file(&format!("firewall-{index:02}.yaml"), &format!("{round}")))
                .collect()
        };
        publish(&dir, &set(0), "firewall-").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let dir = dir.clone();
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) {
                    let files = read_set(&dir).unwrap();
                    assert_eq!(files.len(), 20, "a partial set was read");
                    let first = &files[0].text;
                    assert!(
                        files.iter().all(|f| &f.text == first),
                        "a mixed set was read: {:?}",
                        files.iter().map(|f| &f.text).collect::<Vec<_>>()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for round in 1..200 {
            publish(&dir, &set(round), "firewall-").unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().expect("reader saw a torn set");
        assert!(reads > 0);
    }
}
