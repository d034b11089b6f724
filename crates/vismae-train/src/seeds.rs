//! Per-step seeds: every random draw of a run (data order, masks, flips, augmentation, stochastic
//! depth) is a function of the run's seed and its position, so a resumed run draws what the
//! uninterrupted one drew.

/// Held while a run seeds the backend and initialises its network, and while any network is built
/// to load weights into (its fresh values are drawn too, then replaced). burn keeps one random
/// generator per backend for the whole process; runs in several threads (a study's concurrent
/// cells: one initialising while another loads its best weights to predict) would otherwise draw
/// each other's numbers. Nothing else draws from it (masks, views, augmentation and stochastic
/// depth have their own seeded generators).
pub fn init_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds a network (or anything else that draws from the backend's generator) under
/// [`init_lock`].
pub fn locked<T>(f: impl FnOnce() -> T) -> T {
    let _lock = init_lock();
    f()
}

/// A 64-bit mix of the seed and positions (SplitMix64).
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
