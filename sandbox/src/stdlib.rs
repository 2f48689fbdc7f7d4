//! CPython's standard library as plain files, for a faster start-up.
//!
//! python.wasm keeps its standard library in `python312.zip` inside its embedded file system.
//! Every interpreter start imports `encodings` from it, and zipimport first parses the zip's
//! whole directory in (interpreted, wasm-compiled) Python: about 90 of the 210 million wasm
//! instructions a trivial run costs. So once per module the sandbox asks the interpreter itself to
//! unpack that zip (a trusted program, run under the usual limits), writes the files into the
//! cache folder next to the compiled module, and mounts the folder read-only at [`GUEST_DIR`],
//! first on `PYTHONPATH`. The guest sees the same bytecode it would have read from the zip, and
//! nothing else of the host: cap-std confines the mount, and it is read-only.
//!
//! The folder carries a `MANIFEST` (file count, total size, SHA-256 over names and contents)
//! written last and checked on every load; a folder that fails the check is rebuilt. It is built
//! under a temporary name and renamed into place, so a reader never sees half of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cache::{hex, temporary_sibling};
use crate::run::{Job, Sandbox};
use crate::Status;

/// Where the guest sees the unpacked standard library.
pub(crate) const GUEST_DIR: &str = "/stdlib";

const MANIFEST: &str = "MANIFEST";
const MANIFEST_MAGIC: &str = "AHA-PYTHON-STDLIB-1";

/// Prints every file of the interpreter's standard-library zip as `name<TAB>hex bytes` lines.
const UNPACK: &str = r#"
import sys, zipfile
zips = [p for p in sys.path if p.endswith('.zip')]
if not zips:
    sys.exit(3)
out = sys.stdout
with zipfile.ZipFile(zips[0]) as z:
    for info in z.infolist():
        if not info.is_dir():
            out.write(info.filename + '\t' + z.read(info).hex() + '\n')
"#;

/// The folder for the module with this SHA-256 under `cache_dir`: checked, or built by running
/// the interpreter in `sandbox`. `Err` says why there is none (the runs then use the zip).
pub(crate) fn prepare(sandbox: &Sandbox, cache_dir: &Path, module_sha256: &str) -> Result<PathBuf, String> {
    let dir = cache_dir.join(format!("python-stdlib-{}", &module_sha256[..16]));
    match verify(&dir) {
        Ok(()) => return Ok(dir),
        Err(reason) if dir.exists() => {
            tracing::warn!("unpacked standard library {} is unusable ({reason}); rebuilding it", dir.display());
            std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
        }
        Err(_) => {}
    }
    let job = Job::new(UNPACK).timeout(Duration::from_secs(120)).max_output_bytes(256 << 20);
    let verdict = sandbox.run(job);
    if verdict.status != Status::Ok {
        return Err(format!(
            "the interpreter could not unpack its standard library ({:?}, exit code {:?}): {}",
            verdict.status,
            verdict.exit_code,
            verdict.stderr.lines().last().unwrap_or("")
        ));
    }
    let files = parse(&verdict.stdout)?;
    write(&dir, &files).map_err(|e| format!("writing {}: {e}", dir.display()))?;
    tracing::info!("unpacked python.wasm's standard library ({} files) into {}", files.len(), dir.display());
    Ok(dir)
}

/// The `name<TAB>hex` lines of [`UNPACK`], with every name checked to be a plain relative path.
fn parse(listing: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    for line in listing.lines() {
        let (name, hex) = line.split_once('\t').ok_or("a line of the listing has no tab")?;
        let plain = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        };
        if name == MANIFEST || !name.split('/').all(plain) {
            return Err(format!("refusing the file name {name:?} in the standard library"));
        }
        let bytes = decode_hex(hex).ok_or_else(|| format!("{name}: malformed hex"))?;
        files.push((name.to_owned(), bytes));
    }
    if files.is_empty() {
        return Err("the interpreter's standard-library zip is empty".into());
    }
    files.sort();
    Ok(files)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = hex.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes.chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

/// The manifest line of these files: count, total bytes, SHA-256 over `name\0len\0bytes`.
fn manifest(files: &[(String, Vec<u8>)]) -> String {
    let mut hasher = Sha256::new();
    let mut total = 0;
    for (name, bytes) in files {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(bytes.len().to_string().as_bytes());
        hasher.update([0]);
        hasher.update(bytes);
        total += bytes.len();
    }
    format!("{MANIFEST_MAGIC} {} {total} {}\n", files.len(), hex(&hasher.finalize()))
}

fn write(dir: &Path, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    let tmp = temporary_sibling(dir)?;
    let result = (|| {
        for (name, bytes) in files {
            let path = tmp.join(name);
            std::fs::create_dir_all(path.parent().unwrap_or(&tmp))?;
            std::fs::write(path, bytes)?;
        }
        let mut out = std::fs::File::create(tmp.join(MANIFEST))?;
        out.write_all(manifest(files).as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&tmp, dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another process may have put a complete folder in place first.
        if verify(dir).is_ok() {
            return Ok(());
        }
    }
    result
}

/// Reads every file the manifest covers and checks count, size and checksum.
fn verify(dir: &Path) -> Result<(), String> {
    let expected = std::fs::read_to_string(dir.join(MANIFEST)).map_err(|e| format!("no manifest: {e}"))?;
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = std::fs::read_dir(dir.join(&relative)).map_err(|e| format!("listing: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("listing: {e}"))?;
            let path = relative.join(entry.file_name());
            let kind = entry.file_type().map_err(|e| format!("{}: {e}", path.display()))?;
            if kind.is_dir() {
                pending.push(path);
            } else if path != Path::new(MANIFEST) {
                let bytes = std::fs::read(dir.join(&path)).map_err(|e| format!("{}: {e}", path.display()))?;
                let name = path.to_str().ok_or("a non-UTF-8 file name")?.to_owned();
                files.push((name, bytes));
            }
        }
    }
    files.sort();
    if manifest(&files) != expected {
        return Err("its files do not match its manifest (corrupted, truncated or changed)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for name in ["../x.pyc", "/etc/passwd", "a//b.pyc", "a/./b.pyc", "MANIFEST", "a b.pyc", "a\\b.pyc"] {
            let err = parse(&format!("{name}\t00\n")).unwrap_err();
            assert!(err.contains("refusing the file name"), "{name}: {err}");
        }
        assert_eq!(parse("pkg/mod.pyc\t0aff\n").unwrap(), vec![("pkg/mod.pyc".to_owned(), vec![0x0a, 0xff])]);
        assert!(parse("x.pyc\t0g\n").is_err() && parse("x.pyc\t0\n").is_err() && parse("").is_err());
    }

    #[test]
    fn a_changed_file_fails_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("python-stdlib-0123456789abcdef");
        let files = vec![("a.pyc".to_owned(), b"one".to_vec()), ("pkg/b.pyc".to_owned(), b"two".to_vec())];
        write(&target, &files).unwrap();
        verify(&target).unwrap();
        std::fs::write(target.join("pkg/b.pyc"), b"tw").unwrap();
        assert!(verify(&target).unwrap_err().contains("do not match its manifest"));
        std::fs::write(target.join("pkg/b.pyc"), b"two").unwrap();
        std::fs::write(target.join("extra.pyc"), b"").unwrap();
        assert!(verify(&target).is_err(), "an extra file is a change too");
        std::fs::remove_file(target.join("extra.pyc")).unwrap();
        std::fs::remove_file(target.join(MANIFEST)).unwrap();
        assert!(verify(&target).unwrap_err().contains("no manifest"));
    }
}
