//! The `vismae` binary: everything lives in the `vismae_cli` library, after the allocator is told
//! to keep freed memory for reuse.

/// Tensor buffers of a training step are large and short-lived. By default glibc maps each large
/// one afresh and unmaps it when freed, so every step pays page faults and kernel zeroing (13 % of
/// a full-size MAE step in `perf`). Raising the mmap threshold to its maximum (32 MiB) and never
/// trimming the heap lets freed buffers be reused: the full-size MAE step goes from 6.1 s to 5.5 s
/// (`vismae bench pretrain --variant vis-mae --batch 8 --devices 1`). The cost is that the process
/// keeps its peak heap until it exits.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator tuning parameters; it is called once, before any
    // other thread exists, with valid parameter constants.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// `vismae split ... | head -1` closes the pipe early: Rust ignores SIGPIPE, so the next `println!`
/// panics ("failed printing to stdout"). Restoring the default action ends the process quietly, as
/// other command-line tools end; files are never torn by it (every output is written to a
/// temporary file and renamed).
#[cfg(unix)]
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    // SAFETY: signal() with SIG_DFL only restores the default disposition of SIGPIPE; it is called
    // once, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    keep_freed_memory();
    #[cfg(unix)]
    quiet_on_closed_pipe();
    vismae_cli::main()
}
