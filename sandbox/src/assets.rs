//! Where aha finds its run-time assets: the sandbox's WebAssembly interpreters (`wasm/`, made by
//! `scripts/setup.sh`) and the demos' base models (`demo-model/`, `aha-moment-model/`). They are
//! looked up when the program runs, not fixed when it is built, so an installed binary finds its
//! own copy. The first of these that applies:
//!
//! 1. `$AHA_HOME/assets`, when `AHA_HOME` is set (to a checkout, or to an install's `share/aha`);
//! 2. `share/aha/assets` next to the executable's folder (`ROOT/bin/aha` finds
//!    `ROOT/share/aha/assets`: the layout `cargo install --root ROOT` plus a copy of `assets/`
//!    makes), when that folder exists;
//! 3. the `assets/` of the checkout the binary was built from: `cargo run`, the tests, and a
//!    `cargo install --path cli` whose checkout is still there.

use std::path::{Path, PathBuf};

/// The environment variable that names aha's home: the folder holding `assets/`.
pub const HOME_VAR: &str = "AHA_HOME";

/// How [`locate`] found the assets folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// `$AHA_HOME/assets`.
    Home,
    /// `share/aha/assets` beside the executable's folder.
    Install,
    /// The build checkout's `assets/`.
    BuildCheckout,
}

impl Found {
    /// Where the folder came from, in words (for `aha doctor`).
    pub fn describe(self) -> &'static str {
        match self {
            Found::Home => "from $AHA_HOME",
            Found::Install => "installed next to the binary",
            Found::BuildCheckout => "the checkout the binary was built from",
        }
    }
}

/// The assets folder and how it was found (see the module's notes for the order).
pub fn locate() -> (PathBuf, Found) {
    if let Some(home) = std::env::var_os(HOME_VAR).filter(|v| !v.is_empty()) {
        return (Path::new(&home).join("assets"), Found::Home);
    }
    let installed = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("share/aha/assets")))
        .filter(|dir| dir.is_dir());
    match installed {
        Some(dir) => (dir, Found::Install),
        None => (Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets")).to_path_buf(), Found::BuildCheckout),
    }
}

/// The assets folder (see [`locate`]).
pub fn dir() -> PathBuf {
    locate().0
}
