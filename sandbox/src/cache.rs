//! Loading a WASM module: check it, compile it once, cache the compiled artefact on disk.
//!
//! A cache file is `AHA-CWASM-1\n`, the SHA-256 of the payload (32 bytes), then the payload
//! (wasmtime's serialised module). Its name carries the module's SHA-256, a hash of the engine
//! configuration that affects compiled code and the wasmtime version, so a different module,
//! engine setting or wasmtime never reads a stale artefact. The checksum catches a corrupted or
//! truncated file (wasmtime itself trusts the bytes it deserialises): such a file is reported on
//! one line and rebuilt. Files are written to a temporary name and renamed into place, so a
//! reader never sees half a file.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::SandboxError;

/// The wasmtime release this crate is built against (pinned exactly in the workspace manifest).
pub const WASMTIME_VERSION: &str = "48.0.8";

const MAGIC: &[u8] = b"AHA-CWASM-1\n";

/// Where compiled modules are cached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CacheDir {
    /// `$AHA_CACHE_DIR/wasm`, else `$XDG_CACHE_HOME/aha/wasm`, else `$HOME/.cache/aha/wasm`, else
    /// no cache.
    #[default]
    Default,
    /// This folder (created if needed).
    Dir(PathBuf),
    /// Compile every time.
    Off,
}

impl CacheDir {
    /// The folder this setting resolves to, if any.
    pub fn resolve(&self) -> Option<PathBuf> {
        match self {
            CacheDir::Dir(dir) => Some(dir.clone()),
            CacheDir::Off => None,
            CacheDir::Default => {
                let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
                if let Some(dir) = var("AHA_CACHE_DIR") {
                    Some(dir.join("wasm"))
                } else if let Some(dir) = var("XDG_CACHE_HOME") {
                    Some(dir.join("aha/wasm"))
                } else {
                    var("HOME").map(|home| home.join(".cache/aha/wasm"))
                }
            }
        }
    }
}

/// How the compiled module was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadSource {
    /// Compiled now; no cache was configured or writing it failed.
    Compiled,
    /// Compiled now and written to the cache.
    CompiledAndCached,
    /// Read from the cache.
    Cached,
    /// The cache file was unusable (reason given) and was rebuilt.
    Rebuilt(String),
}

/// What was loaded, from where, and how long it took.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    pub path: PathBuf,
    /// Hex SHA-256 of the `.wasm` file.
    pub sha256: String,
    pub cache_file: Option<PathBuf>,
    pub source: LoadSource,
    /// Time to read, hash and compile or deserialise the module.
    pub load_ms: u64,
    /// Python only: the standard library unpacked next to the cache file and mounted read-only
    /// in every run (faster start-up); `None` without a cache folder or if unpacking failed.
    pub stdlib_dir: Option<PathBuf>,
}

/// Compiles modules for an engine, through an on-disk cache.
pub struct ModuleCache<'a> {
    pub engine: &'a Engine,
    pub dir: Option<PathBuf>,
}

/// What [`ModuleCache`] compiles: a core module (`python.wasm`, `quickjs.wasm`, plug-ins) or a
/// component (the pre-initialised CPython).
pub trait Compiled: Sized {
    /// Check the file's header before compiling it.
    fn check(path: &Path, bytes: &[u8]) -> Result<(), SandboxError>;
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
    /// # Safety
    /// `bytes` must come from [`Compiled::serialize`] of an engine with a compatible configuration.
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
}

impl Compiled for Module {
    fn check(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
        check_wasm(path, bytes, &[1, 0, 0, 0], "a version-1 core module")
    }
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        Module::from_binary(engine, bytes)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Module::serialize(self)
    }
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        unsafe { Module::deserialize(engine, bytes) }
    }
}

impl Compiled for Component {
    fn check(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
        check_wasm(path, bytes, &[0x0d, 0, 1, 0], "a WebAssembly component")
    }
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        Component::from_binary(engine, bytes)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Component::serialize(self)
    }
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        unsafe { Component::deserialize(engine, bytes) }
    }
}

impl ModuleCache<'_> {
    /// Load `path`: check that it is the kind of WASM `T` is, then read its compiled form from
    /// the cache or compile it (and cache it).
    pub fn load<T: Compiled>(&self, path: &Path) -> Result<(T, ModuleInfo), SandboxError> {
        let start = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => SandboxError::ModuleMissing { path: path.to_owned() },
            _ => SandboxError::Io { path: path.to_owned(), source },
        })?;
        T::check(path, &bytes)?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let cache_file = self.dir.as_ref().map(|dir| dir.join(self.file_name(path, &sha256)));
        let info = |source, cache_file| ModuleInfo {
            path: path.to_owned(),
            sha256: sha256.clone(),
            cache_file,
            source,
            load_ms: start.elapsed().as_millis() as u64,
            stdlib_dir: None,
        };

        let mut source = LoadSource::Compiled;
        if let Some(file) = &cache_file {
            match self.read_cached(file) {
                Ok(Some(compiled)) => {
                    let info = info(LoadSource::Cached, cache_file.clone());
                    tracing::debug!(?info, "loaded compiled module from the cache");
                    return Ok((compiled, info));
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!("compiled-module cache {} is unusable ({reason}); rebuilding it", file.display());
                    let _ = std::fs::remove_file(file);
                    source = LoadSource::Rebuilt(reason);
                }
            }
        }

        let compile_start = Instant::now();
        let compiled = T::compile(self.engine, &bytes)
            .map_err(|e| SandboxError::Compile { path: path.to_owned(), message: format!("{e:#}") })?;
        tracing::info!("compiled {} in {:.1} s", path.display(), compile_start.elapsed().as_secs_f64());
        if let Some(file) = &cache_file {
            match compiled
                .serialize()
                .map_err(|e| std::io::Error::other(format!("{e:#}")))
                .and_then(|p| write_cache(file, &p))
            {
                Ok(()) => {
                    if source == LoadSource::Compiled {
                        source = LoadSource::CompiledAndCached;
                    }
                }
                Err(e) => tracing::warn!("could not write the compiled-module cache {}: {e}", file.display()),
            }
        }
        Ok((compiled, info(source, cache_file)))
    }

    fn file_name(&self, path: &Path, sha256: &str) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("module");
        let stem: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        format!("{stem}-{}-{:016x}-wasmtime-{WASMTIME_VERSION}.cwasm", &sha256[..16], hasher.finish())
    }

    /// `Ok(None)`: no cache file. `Err(reason)`: a file that is there but unusable.
    fn read_cached<T: Compiled>(&self, file: &Path) -> Result<Option<T>, String> {
        let data = match std::fs::read(file) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let header = MAGIC.len() + 32;
        if data.len() < header || &data[..MAGIC.len()] != MAGIC {
            return Err("not an aha compiled-module file".into());
        }
        let (sum, payload) = data[MAGIC.len()..].split_at(32);
        if Sha256::digest(payload).as_slice() != sum {
            return Err("checksum mismatch: the file is corrupted or truncated".into());
        }
        // SAFETY: wasmtime requires that deserialised bytes come from `serialize` of a compatible
        // engine. The payload is exactly what this crate wrote (its SHA-256 matches the header),
        // under a name keyed by the engine configuration, the wasmtime version and the source
        // file's SHA-256 (a module and a component never share one); wasmtime also checks its own
        // version and configuration header and fails cleanly on a mismatch.
        unsafe { T::deserialize(self.engine, payload) }.map(Some).map_err(|e| format!("wasmtime rejected it: {e}"))
    }
}

/// A WASM binary starts with `\0asm` and a version/layer word: `1 0 0 0` for a core module,
/// `0d 00 01 00` for a component.
fn check_wasm(path: &Path, bytes: &[u8], version: &[u8; 4], kind: &str) -> Result<(), SandboxError> {
    let not_wasm = |detail: String| Err(SandboxError::NotWasm { path: path.to_owned(), detail });
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return not_wasm("it does not start with the \\0asm magic number".into());
    }
    if &bytes[4..8] != version {
        return not_wasm(format!("it is not {kind} (another layer or version)"));
    }
    Ok(())
}

/// A fresh hidden name next to `path` (its folder created), to build `path` under and rename into
/// place: readers never see half of it.
pub(crate) fn temporary_sibling(path: &Path) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    Ok(dir.join(format!(
        ".{}.{}-{nanos}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    )))
}

fn write_cache(file: &Path, payload: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_sibling(file)?;
    let result = (|| {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(MAGIC)?;
        out.write_all(&Sha256::digest(payload))?;
        out.write_all(payload)?;
        out.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
