//! Helpers for the crate's unit tests.

/// A xorshift64 generator from `seed` (non-zero): reproducible pseudo-random numbers for table and differential
/// tests, without a dependency.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
