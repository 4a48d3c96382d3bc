//! `receipts`: see `receipts --help`.

use clap::Parser;
use receipts::cli::{Cli, run};

/// mimalloc: the services allocate and free many small buffers per record, which glibc's
/// allocator serves slowly and, with one arena per thread, holds on to.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
