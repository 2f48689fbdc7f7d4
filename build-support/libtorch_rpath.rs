//! Build script shared by every crate that links libtorch (see `build = ...` in their Cargo.toml).
//!
//! torch-sys (`links = "tch"`) exports the folder of the libtorch it linked against as
//! `DEP_TCH_LIBTORCH_LIB`. Baking it into the rpath of every binary and test of the crate means
//! nobody ever needs LD_LIBRARY_PATH. After it comes `$ORIGIN/../lib`: an installed binary
//! (`ROOT/bin/aha`) whose build checkout is gone finds libtorch's libraries through `ROOT/lib` (a
//! link to libtorch's library folder; see the README's "Installing"). `--no-as-needed -ltorch`
//! keeps libtorch.so (and through it libtorch_cuda.so) linked although no symbol is used
//! directly, so CUDA is found on GPU machines.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not export DEP_TCH_LIBTORCH_LIB; run scripts/setup.sh first");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch,--as-needed");
}
