//! The `vismae` binary: everything lives in the `vismae_cli` library.

fn main() -> std::process::ExitCode {
    vismae_cli::main()
}
