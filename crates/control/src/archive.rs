//! A built app out of a `.tar.gz` (`.tgz`) or `.zip`: each regular file by its path inside,
//! within bounds a hostile archive cannot get around (how many files, bytes per file and in
//! all, counted as they are read, never as the archive claims). The CLI and the console's
//! upload read archives through this one path.

use std::io::{self, Read, Seek};

/// Most files in one app version.
pub const MAX_FILES: usize = 20_000;

/// Most bytes of all files of one upload, unpacked.
pub const MAX_TOTAL: u64 = 1 << 30;

/// An archive that cannot be read as an app.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The bytes are not an archive of the kind its name says.
    #[error("not a {format} archive: {reason}")]
    NotArchive {
        /// `.tar.gz` or `.zip`.
        format: &'static str,
        /// What the reader said.
        reason: String,
    },
    /// An entry could not be read.
    #[error("`{path}` cannot be read: {reason}")]
    Broken {
        /// The entry.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// More than the bounds allow.
    #[error("{0}")]
    TooLarge(String),
    /// An entry's path is not a valid app file path.
    #[error("`{path}`: {problem}")]
    BadPath {
        /// The entry.
        path: String,
        /// Why not.
        problem: &'static str,
    },
}

/// The archive formats an app can come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// gzip-compressed tar.
    TarGz,
    /// zip (stored or deflated entries).
    Zip,
}

impl Format {
    /// The format a file name says (`site.tar.gz`, `site.tgz`, `site.zip`), if any.
    pub fn of(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(Self::TarGz)
        } else if name.ends_with(".zip") {
            Some(Self::Zip)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::TarGz => ".tar.gz",
            Self::Zip => ".zip",
        }
    }
}

/// Bounds on what an archive may unpack to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Files.
    pub files: usize,
    /// Bytes of one file.
    pub file_bytes: u64,
    /// Bytes of all files.
    pub total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            files: MAX_FILES,
            file_bytes: crate::blobs::MAX_FILE,
            total_bytes: MAX_TOTAL,
        }
    }
}

/// Calls `visit` with each regular file's path (as written in the archive, `./` dropped)
/// and a reader of its content, in archive order; `visit` answers how many bytes it read.
/// Directories, links and other special entries are skipped.
pub fn each_file<R: Read + Seek>(
    reader: R,
    format: Format,
    limits: &Limits,
    mut visit: impl FnMut(&str, &mut dyn Read) -> io::Result<u64>,
) -> Result<(), ArchiveError> {
    let not = |e: &dyn std::fmt::Display| ArchiveError::NotArchive {
        format: format.name(),
        reason: e.to_string(),
    };
    let mut count = Counter {
        limits,
        files: 0,
        total: 0,
    };
    match format {
        Format::TarGz => {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
            for entry in archive.entries().map_err(|e| not(&e))? {
                let mut entry = entry.map_err(|e| not(&e))?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let path = entry
                    .path()
                    .map_err(|e| not(&e))?
                    .to_string_lossy()
                    .into_owned();
                count.file(&path, &mut entry, &mut visit)?;
            }
        }
        Format::Zip => {
            let mut archive = zip::ZipArchive::new(reader).map_err(|e| not(&e))?;
            for i in 0..archive.len() {
                let mut f = archive.by_index(i).map_err(|e| not(&e))?;
                if !f.is_file() {
                    continue;
                }
                let path = f.name().map_err(|e| not(&e))?.into_owned();
                count.file(&path, &mut f, &mut visit)?;
            }
        }
    }
    if count.files == 0 {
        return Err(ArchiveError::NotArchive {
            format: format.name(),
            reason: "it holds no file".into(),
        });
    }
    Ok(())
}

/// Counts files and bytes against the limits while entries are read.
struct Counter<'a> {
    limits: &'a Limits,
    files: usize,
    total: u64,
}

impl Counter<'_> {
    fn file(
        &mut self,
        path: &str,
        content: &mut dyn Read,
        visit: &mut impl FnMut(&str, &mut dyn Read) -> io::Result<u64>,
    ) -> Result<(), ArchiveError> {
        let path = path.trim_start_matches("./");
        if path.is_empty() {
            return Ok(());
        }
        self.files += 1;
        if self.files > self.limits.files {
            return Err(ArchiveError::TooLarge(format!(
                "an app has at most {} files",
                self.limits.files
            )));
        }
        // One byte past the bound tells a file that is too large from one that fits exactly.
        let room = self
            .limits
            .file_bytes
            .min(self.limits.total_bytes - self.total);
        let mut bounded = content.take(room + 1);
        let read = visit(path, &mut bounded).map_err(|e| ArchiveError::Broken {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if read > room {
            return Err(ArchiveError::TooLarge(if room < self.limits.file_bytes {
                format!(
                    "the files unpack to more than {} MiB in all",
                    self.limits.total_bytes >> 20
                )
            } else {
                format!(
                    "`{path}` unpacks to more than {} MiB, the most one file may have",
                    self.limits.file_bytes >> 20
                )
            }));
        }
        self.total += read;
        Ok(())
    }
}

/// An archive of the folder itself (`dist/index.html`, `dist/app.js`): when no
/// `index.html` is at the top and every path is under one folder, that folder's contents
/// are the app's root. Then checks every path.
pub fn app_paths(paths: &mut [String]) -> Result<(), ArchiveError> {
    let top = |p: &str| p.split('/').next().unwrap_or("").to_owned();
    if !paths.iter().any(|p| p == "index.html")
        && let Some(first) = paths.first()
    {
        let folder = top(first);
        if paths.iter().all(|p| p.contains('/') && top(p) == folder) {
            for p in paths.iter_mut() {
                *p = p[folder.len() + 1..].to_owned();
            }
        }
    }
    for p in paths.iter() {
        if let Some(problem) = portico_model::app::path_problem(p) {
            return Err(ArchiveError::BadPath {
                path: p.clone(),
                problem,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn read_all(bytes: Vec<u8>, limits: &Limits) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
        let mut out = Vec::new();
        each_file(io::Cursor::new(bytes), Format::TarGz, limits, |p, r| {
            let mut v = Vec::new();
            let n = r.read_to_end(&mut v)? as u64;
            out.push((p.to_owned(), v));
            Ok(n)
        })?;
        Ok(out)
    }

    #[test]
    fn files_come_out_with_their_paths_and_content() {
        let got = read_all(
            tar_gz(&[("./index.html", b"<h1>hi</h1>"), ("a/b.js", b"x")]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("index.html".to_owned(), b"<h1>hi</h1>".to_vec()),
                ("a/b.js".to_owned(), b"x".to_vec())
            ]
        );
    }

    #[test]
    fn bounds_hold_on_the_bytes_read_not_the_bytes_claimed() {
        let small = Limits {
            files: 10,
            file_bytes: 4,
            total_bytes: 6,
        };
        // Exactly at the bound is fine.
        assert!(read_all(tar_gz(&[("a", b"1234")]), &small).is_ok());
        let e = read_all(tar_gz(&[("a", b"12345")]), &small).unwrap_err();
        assert!(e.to_string().contains("`a` unpacks to more than"), "{e}");
        let e = read_all(tar_gz(&[("a", b"1234"), ("b", b"123")]), &small).unwrap_err();
        assert!(e.to_string().contains("in all"), "{e}");
        let few = Limits { files: 1, ..small };
        let e = read_all(tar_gz(&[("a", b"1"), ("b", b"2")]), &few).unwrap_err();
        assert!(e.to_string().contains("at most 1 files"), "{e}");
    }

    #[test]
    fn not_an_archive_says_so() {
        let e = read_all(b"hello, not gzip".to_vec(), &Limits::default()).unwrap_err();
        assert!(e.to_string().starts_with("not a .tar.gz archive"), "{e}");
        let e = each_file(
            io::Cursor::new(b"PK nope".to_vec()),
            Format::Zip,
            &Limits::default(),
            |_, _| Ok(0),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("not a .zip archive"), "{e}");
    }

    #[test]
    fn a_folder_archived_whole_is_its_contents() {
        let mut p = vec!["dist/index.html".to_owned(), "dist/a/b.js".to_owned()];
        app_paths(&mut p).unwrap();
        assert_eq!(p, ["index.html", "a/b.js"]);
        let mut kept = vec!["index.html".to_owned(), "dist/a.js".to_owned()];
        app_paths(&mut kept).unwrap();
        assert_eq!(kept, ["index.html", "dist/a.js"]);
        let mut bad = vec!["../etc/passwd".to_owned(), "index.html".to_owned()];
        let e = app_paths(&mut bad).unwrap_err();
        assert!(e.to_string().contains("`..`"), "{e}");
    }
}
