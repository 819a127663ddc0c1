//! [`InvalidSetting`]: a setting that cannot work, refused where it is given.

/// A setting that cannot work (a zero count, a zero timeout), refused by the constructor it
/// was given to rather than silently raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct InvalidSetting {
    /// The setting, as its field is named.
    pub setting: &'static str,
    /// What it must be.
    pub reason: &'static str,
}

impl InvalidSetting {
    /// `Err` naming `setting` when `value` is zero.
    ///
    /// # Errors
    /// [`InvalidSetting`] with the reason "must be at least 1".
    pub fn at_least_one(setting: &'static str, value: u64) -> Result<(), InvalidSetting> {
        if value == 0 {
            return Err(InvalidSetting {
                setting,
                reason: "must be at least 1",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused_by_name() {
        assert_eq!(InvalidSetting::at_least_one("workers", 1), Ok(()));
        let Err(err) = InvalidSetting::at_least_one("workers", 0) else {
            panic!("zero taken");
        };
        assert_eq!(err.setting, "workers");
        assert_eq!(
            err.to_string(),
            "invalid setting workers: must be at least 1"
        );
    }
}
