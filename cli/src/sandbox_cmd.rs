//! `aha sandbox run FILE`: run one program in the WASM sandbox and print its verdict as JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use aha_sandbox::{Job, Lang, Limits, Sandbox, SandboxConfig};

#[derive(Args)]
pub struct SandboxCommand {
    #[command(subcommand)]
    action: SandboxAction,
}

#[derive(Subcommand)]
enum SandboxAction {
    /// Run a program; print {"status", "exit_code", "stdout", "stderr", "wall_ms", "fuel_used",
    /// "detail"} and exit 0 whatever the guest did.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The program (Python source, or JavaScript with --lang js).
    file: PathBuf,
    /// Bytes to feed the program's stdin (default: empty).
    #[arg(long)]
    stdin: Option<PathBuf>,
    /// Wall-clock deadline in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Cap on the guest's linear memory, in MiB.
    #[arg(long, default_value_t = 512)]
    memory_mb: u64,
    /// Cap on each of stdout and stderr, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_output_bytes: usize,
    /// Fuel budget (about one unit per wasm instruction); default unlimited.
    #[arg(long)]
    fuel: Option<u64>,
    /// python or js.
    #[arg(long, default_value = "python")]
    lang: String,
    /// The WASM interpreter module (default: $AHA_SANDBOX_MODULE, else wasm/python.wasm or
    /// wasm/quickjs.wasm in aha's assets folder: see `aha doctor`).
    #[arg(long)]
    module: Option<PathBuf>,
    /// Python: start CPython 3.12 from python.wasm instead of running from the pre-initialised
    /// CPython 3.14 snapshot (python-snapshot.wasm next to the module; slower start-up).
    #[arg(long)]
    no_snapshot: bool,
    /// Python with --no-snapshot: import the standard library from python.wasm's zip, with no
    /// read-only /stdlib mount and an empty environment (slower start-up).
    #[arg(long)]
    no_unpacked_stdlib: bool,
}

pub fn run(command: SandboxCommand) -> Result<()> {
    match command.action {
        SandboxAction::Run(args) => run_file(args),
    }
}

fn run_file(args: RunArgs) -> Result<()> {
    let lang = Lang::parse(&args.lang)
        .with_context(|| format!("--lang {:?} is not supported (use python or js)", args.lang))?;
    let code = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let stdin = match &args.stdin {
        Some(path) => std::fs::read(path).with_context(|| format!("reading --stdin {}", path.display()))?,
        None => Vec::new(),
    };
    anyhow::ensure!(args.timeout_ms > 0, "--timeout-ms must be positive");
    anyhow::ensure!(args.memory_mb > 0, "--memory-mb must be positive");
    let module = args
        .module
        .or_else(|| std::env::var_os("AHA_SANDBOX_MODULE").filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| lang.bundled_module());
    let mut config =
        SandboxConfig::new(module).lang(lang).workers(1).fuel_metering(true).unpacked_stdlib(!args.no_unpacked_stdlib);
    if args.no_snapshot {
        config = config.snapshot(None);
    }
    let sandbox = Sandbox::new(config)?;
    let limits = Limits {
        timeout: Duration::from_millis(args.timeout_ms),
        memory_bytes: args.memory_mb << 20,
        max_output_bytes: args.max_output_bytes,
        fuel: args.fuel,
    };
    let verdict = sandbox.run(Job { code, stdin, limits });
    println!("{}", serde_json::to_string(&verdict)?);
    Ok(())
}
