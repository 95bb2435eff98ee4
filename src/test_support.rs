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

/// The default injection configuration, then one configuration per setting (`key`, `value` as
/// [`crate::inject::InjectionConfig::apply_setting`] takes them), each the default with that one setting.
pub fn configs_with(settings: &[(&str, &str)]) -> Vec<crate::inject::InjectionConfig> {
    let mut out = vec![crate::inject::InjectionConfig::default()];
    for (key, value) in settings {
        let mut config = crate::inject::InjectionConfig::default();
        config.apply_setting(key, value).unwrap();
        out.push(config);
    }
    out
}
