//! Task configuration handed to a plugin when it creates an instance.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::PluginError;

/// Key/value configuration of the task an instance belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

impl Config {
    /// Builds a configuration from key/value pairs (a later key wins).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Config {
            entries: pairs.into_iter().collect(),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The value of `key` parsed as `T`, if set.
    ///
    /// # Errors
    ///
    /// An `invalid_argument` error naming the key when the value does not parse.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, PluginError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|raw| {
                raw.parse().map_err(|e| {
                    PluginError::invalid_argument(format!("config `{key}` = {raw:?}: {e}"))
                })
            })
            .transpose()
    }

    /// All entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Per-instance state of a plugin.
///
/// The host creates instances from the task's [`Config`], runs one call at a
/// time on each, and drops them when it no longer needs them. A function gets
/// its instance by taking `&mut YourState` as a parameter.
pub trait Instance: Send + Sized + 'static {
    /// Creates an instance.
    ///
    /// # Errors
    ///
    /// Whatever makes the configuration unusable; the task's creation fails
    /// with it.
    fn new(config: &Config) -> Result<Self, PluginError>;
}

/// Plugins without state.
impl Instance for () {
    fn new(_config: &Config) -> Result<Self, PluginError> {
        Ok(())
    }
}
