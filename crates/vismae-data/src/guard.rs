//! Containment of panics in third-party decoders: malformed files can make a dependency's codec
//! panic (the fuzzer found an out-of-bounds index in dicom-rs's RLE decoder). `guarded` turns
//! such a panic into an error for that one file; `install_panic_hook` keeps it off stderr, so a
//! bad file gives one line naming it, not a backtrace, while every other panic still reports.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; a panic inside becomes `Err` with its message.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let was = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

/// Wraps the current panic hook so that panics inside [`guarded`] are not printed.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !GUARDED.with(Cell::get) {
            previous(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        install_panic_hook();
        let r: Result<(), String> = guarded(|| panic!("decoder fell over"));
        assert_eq!(r.unwrap_err(), "decoder fell over");
        assert_eq!(guarded(|| 7), Ok(7));
    }
}
