//! An installed `aha`: the binary in ROOT/bin and the assets in ROOT/share/aha/assets (what
//! `cargo install --path cli --root ROOT` and a copy of `assets/` make; see the README's
//! "Installing"), run from another folder, finds its assets there and not in the checkout it was
//! built from; `AHA_HOME` overrides both.

use std::path::Path;
use std::process::{Command, Output};

fn checkout_assets() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets").canonicalize().unwrap()
}

fn stdout_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn an_installed_binary_finds_its_assets_next_to_it() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let aha = root.join("bin/aha");
    std::fs::copy(env!("CARGO_BIN_EXE_aha"), &aha).unwrap();
    let assets = root.join("share/aha/assets");
    std::fs::create_dir_all(assets.join("demo-model")).unwrap();
    for entry in std::fs::read_dir(checkout_assets().join("demo-model")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, assets.join("demo-model").join(path.file_name().unwrap())).unwrap();
    }
    // The interpreters are large: a link to the checkout's stands in for a copy.
    std::os::unix::fs::symlink(checkout_assets().join("wasm"), assets.join("wasm")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str], home: Option<&Path>| {
        let mut command = Command::new(&aha);
        command.args(args).current_dir(elsewhere.path()).env_remove("AHA_HOME");
        if let Some(home) = home {
            command.env("AHA_HOME", home);
        }
        command.output().expect("run the installed aha")
    };

    let doctor = stdout_of(&run(&["doctor"], None));
    assert!(doctor.contains(&format!("assets: {} (installed next to the binary)", assets.display())), "{doctor}");
    assert!(doctor.contains(&format!("python.wasm: {}", assets.join("wasm/python.wasm").display())), "{doctor}");
    let checkout = checkout_assets().parent().unwrap().to_path_buf();
    let doctor = stdout_of(&run(&["doctor"], Some(&checkout)));
    assert!(doctor.contains(&format!("assets: {} (from $AHA_HOME)", checkout.join("assets").display())), "{doctor}");

    // The demo, shortened (2 steps, 8 held-out problems), with the installed base model.
    let demo = stdout_of(&run(
        &[
            "demo",
            "--eval-samples",
            "1",
            "--out",
            "run",
            "--set",
            "run.steps=2",
            "--set",
            "data.eval_source=\"builtin:addition:digits=3,count=8,seed=20261128\"",
        ],
        None,
    ));
    assert!(demo.contains(&format!("Base model {} ", assets.join("demo-model").display())), "{demo}");
    assert!(elsewhere.path().join("run/demo.json").is_file(), "{demo}");
}
