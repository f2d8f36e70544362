//! The disk side of the core's `SourceLoader`: `use "file.flx"` reads files inside the project
//! folder (the folder of the file given to the command), and data, `use` and output paths are
//! judged after `..` and symbolic links are resolved (§3, §10.3).

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use fluxc_core::{Folder, LoadError, PathPolicy, SourceLoader, lexically_inside};
use fluxc_syntax::limits::MAX_SOURCE_BYTES;

pub struct DiskLoader {
    /// Source-map names are paths relative to this folder (the working directory for the CLI).
    root: PathBuf,
    /// The project folder, canonical.
    project: PathBuf,
    /// The output folder (it may not exist yet).
    out: PathBuf,
}

impl DiskLoader {
    /// A loader for the file `main` (named relative to `root`); outputs go to `out`, by default
    /// `out/` beside the file.
    pub fn new(root: &Path, main: &Path, out: Option<&Path>) -> DiskLoader {
        let folder = parent_or_dot(&root.join(main));
        let project = resolve(&folder);
        let out = match out {
            Some(o) => root.join(o),
            None => project.join("out"),
        };
        DiskLoader { root: root.to_path_buf(), project, out }
    }

    fn folder_of(&self, from: &str) -> PathBuf {
        parent_or_dot(&self.root.join(from))
    }
}

/// The folder of a file, `.` for a bare file name.
fn parent_or_dot(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Resolves `..` and `.` by their components alone.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The canonical form of a path that may not exist: its longest existing ancestor resolved
/// (symbolic links included), the rest appended.
fn resolve(p: &Path) -> PathBuf {
    let absolute = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    };
    let p = normalise(&absolute);
    let mut existing = p.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return normalise(&out);
        }
        match (existing.file_name().map(|f| f.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return p,
        }
    }
}

impl PathPolicy for DiskLoader {
    fn stays_inside(&self, from: &str, path: &str, folder: Folder) -> bool {
        if !lexically_inside(path) {
            return false;
        }
        match folder {
            Folder::Project => resolve(&self.folder_of(from).join(path)).starts_with(&self.project),
            Folder::Output => {
                let out = resolve(&self.out);
                resolve(&out.join(path)).starts_with(&out)
            }
        }
    }
}

impl SourceLoader for DiskLoader {
    fn load(&mut self, from: &str, path: &str) -> Result<(String, String), LoadError> {
        if !self.stays_inside(from, path, Folder::Project) {
            return Err(LoadError::Outside);
        }
        let name_path = normalise(&Path::new(from).parent().unwrap_or(Path::new("")).join(path));
        let full = self.root.join(&name_path);
        let file = std::fs::File::open(&full).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound,
            _ => LoadError::Unreadable(e.to_string()),
        })?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(LoadError::Unreadable("it is a directory".into()));
        }
        let mut bytes = Vec::new();
        file.take(MAX_SOURCE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| LoadError::Unreadable(e.to_string()))?;
        if bytes.len() > MAX_SOURCE_BYTES {
            return Err(LoadError::Unreadable("the file is larger than 4 MiB".into()));
        }
        let text =
            String::from_utf8(bytes).map_err(|_| LoadError::Unreadable("it is not valid UTF-8".into()))?;
        Ok((name_path.display().to_string(), text))
    }
}
