//! The `spearlet.` keys of invocation metadata: checked, all of them, before
//! anything is done with a request, so that a value out of range is a clear
//! INVALID_ARGUMENT naming the key, the value and the limit — never a panic
//! deeper down, and never an allocation sized by a caller (see
//! `docs/reliability.md`).

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pool::PoolLimits;

use super::{IsolationSetting, MEMORY_MAX_KEY, POOL_MAX_KEY, POOL_MIN_KEY, UPGRADE_KEY};

/// Every key of the `spearlet.` namespace a request may carry: those the
/// host reads, and those its cluster registration writes (which come back
/// in a task's metadata).
const KNOWN: [&str; 8] = [
    UPGRADE_KEY,
    super::DRY_RUN_KEY,
    POOL_MIN_KEY,
    POOL_MAX_KEY,
    crate::isolate::ISOLATION_KEY,
    MEMORY_MAX_KEY,
    crate::sms::ALIAS_KEY,
    crate::sms::ENDPOINT_KEY,
];

fn invalid(reason: String) -> Error {
    Error::InvalidRequest {
        field: "invocation_metadata",
        reason,
    }
}

/// Checks every `spearlet.` key of `metadata` against what it may hold
/// under `config`.
///
/// # Errors
///
/// [`Error::InvalidRequest`] naming the key, the value and what it must be:
/// an unknown key of the namespace (with the known ones), a flag that is
/// not `true` or `false`, pool limits out of range, an isolation setting
/// [`IsolationSetting::from_metadata`] refuses.
pub fn check(metadata: &BTreeMap<String, String>, config: &Config) -> Result<()> {
    let from = std::ops::Bound::Included("spearlet.");
    for (key, value) in metadata.range::<str, _>((from, std::ops::Bound::Unbounded)) {
        if !key.starts_with("spearlet.") {
            break;
        }
        if !KNOWN.contains(&key.as_str()) {
            return Err(invalid(format!(
                "`{key}` is not a key spearlet knows; the `spearlet.` keys are {}",
                KNOWN.map(|k| format!("`{k}`")).join(", ")
            )));
        }
        if key == UPGRADE_KEY || key == super::DRY_RUN_KEY {
            flag(key, value)?;
        }
    }
    pool_limits(metadata, &config.pool)?;
    IsolationSetting::from_metadata(metadata, config.tiers.isolation)?;
    Ok(())
}

fn flag(key: &str, value: &str) -> Result<bool> {
    match value.trim() {
        v if v.eq_ignore_ascii_case("true") => Ok(true),
        v if v.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(invalid(format!(
            "`{key}` must be `true` or `false`, got `{value}`"
        ))),
    }
}

/// The pool limits `metadata` asks for, the configured ones for what it
/// does not say: `spearlet.pool.max` from 1 to `pool.max_instances`,
/// `spearlet.pool.min` from 0 to the max.
///
/// # Errors
///
/// [`Error::InvalidRequest`] naming the key, the value and the limit.
pub fn pool_limits(
    metadata: &BTreeMap<String, String>,
    pool: &crate::config::PoolConfig,
) -> Result<PoolLimits> {
    let ceiling = pool.max_instances;
    let read = |key: &'static str, default: usize, low: usize, high: usize| -> Result<usize> {
        let Some(v) = metadata.get(key) else {
            return Ok(default);
        };
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (low..=high).contains(n))
            .ok_or_else(|| {
                invalid(format!(
                    "`{key}` must be a whole number from {low} to {high} \
                     (pool.max_instances = {ceiling}), got `{v}`"
                ))
            })
    };
    let max = read(POOL_MAX_KEY, pool.max_instances, 1, ceiling)?;
    let min = read(POOL_MIN_KEY, pool.min_instances.min(max), 0, max)?;
    Ok(PoolLimits { min, max })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::invoke::tests::metadata;

    #[test]
    fn pool_limits_are_bounded_by_the_configured_maximum() {
        let config = Config::default();
        let limit = |pairs: &[(&str, &str)]| pool_limits(&metadata(pairs), &config.pool);
        let l = limit(&[]).unwrap();
        assert_eq!((l.min, l.max), (1, 8));
        let l = limit(&[(POOL_MAX_KEY, "2"), (POOL_MIN_KEY, "0")]).unwrap();
        assert_eq!((l.min, l.max), (0, 2));
        for (pairs, shown) in [
            (
                vec![(POOL_MAX_KEY, "2305843009213693952")],
                "`spearlet.pool.max` must be a whole number from 1 to 8",
            ),
            (
                vec![(POOL_MIN_KEY, "18446744073709551615")],
                "`spearlet.pool.min` must be a whole number from 0 to 8",
            ),
            (vec![(POOL_MAX_KEY, "0")], "from 1 to 8"),
            (
                vec![(POOL_MAX_KEY, "2"), (POOL_MIN_KEY, "3")],
                "from 0 to 2",
            ),
            (vec![(POOL_MAX_KEY, "-1")], "got `-1`"),
        ] {
            let err = limit(&pairs).unwrap_err().to_string();
            assert!(
                err.contains(shown) && err.contains("pool.max_instances = 8"),
                "{pairs:?}: {err}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_flags_of_the_namespace_are_refused() {
        let config = Config::default();
        let err = check(&metadata(&[("spearlet.pool.maximum", "2")]), &config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`spearlet.pool.maximum`") && err.contains("`spearlet.pool.max`"),
            "{err}"
        );
        let err = check(&metadata(&[(UPGRADE_KEY, "yes")]), &config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`spearlet.upgrade`") && err.contains("`yes`"),
            "{err}"
        );
        check(
            &metadata(&[
                (UPGRADE_KEY, "TRUE"),
                ("spearlet_other", "x"),
                ("user", "y"),
            ]),
            &config,
        )
        .unwrap();
    }

    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(POOL_MIN_KEY.to_owned()),
            Just(POOL_MAX_KEY.to_owned()),
            Just(MEMORY_MAX_KEY.to_owned()),
            Just(crate::isolate::ISOLATION_KEY.to_owned()),
            Just(UPGRADE_KEY.to_owned()),
            Just(crate::invoke::DRY_RUN_KEY.to_owned()),
            "spearlet\\.[a-z.]{0,12}",
            "[a-z]{1,8}",
        ]
    }

    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..20).prop_map(|n| n.to_string()),
            Just("process".to_owned()),
            Just("in-process".to_owned()),
            Just("true".to_owned()),
            ".{0,12}",
        ]
    }

    proptest! {
        /// Whatever a caller sends, the check answers: accepted metadata
        /// yields pool limits within the configured bound, refused metadata
        /// names a key it carries.
        #[test]
        fn any_metadata_is_accepted_within_bounds_or_refused_naming_its_key(
            pairs in proptest::collection::btree_map(any_key(), any_value(), 0..6)
        ) {
            let config = Config::default();
            match check(&pairs, &config) {
                Ok(()) => {
                    let limits = pool_limits(&pairs, &config.pool).unwrap();
                    prop_assert!(limits.max >= 1 && limits.max <= config.pool.max_instances);
                    prop_assert!(limits.min <= limits.max);
                }
                Err(e) => {
                    let text = e.to_string();
                    let invalid_request = matches!(e, Error::InvalidRequest { .. });
                    prop_assert!(invalid_request, "{}", text);
                    prop_assert!(
                        pairs.keys().any(|k| text.contains(&format!("`{k}`"))),
                        "{text}"
                    );
                }
            }
        }
    }
}
