use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// A duration written as `500ms`, `90s`, `10m`, `2h` or `3d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(Duration);

impl HumanDuration {
    /// The longest duration a workflow may write (a delay, a wait's timeout, a retry's wait).
    pub const MAX: Duration = Duration::from_secs(366 * 86_400);

    /// A duration of a workflow: at most [`HumanDuration::MAX`].
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::parse_within(raw, "duration", Duration::ZERO..=Self::MAX)
    }

    /// The one parser of every duration Herald reads (workflows, assistants, request timeouts,
    /// configuration), with the bounds of its use; errors name the use (`what`).
    pub fn parse_within(
        raw: &str,
        what: &str,
        bounds: std::ops::RangeInclusive<Duration>,
    ) -> Result<Self, String> {
        let err = || format!("bad {what} '{raw}': write it as 500ms, 90s, 10m, 2h or 3d");
        let s = raw.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (number, unit) = s.split_at(split);
        let n: u64 = number.parse().map_err(|_| err())?;
        let seconds = |factor: u64| n.checked_mul(factor).map(Duration::from_secs);
        let duration = match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => seconds(1),
            "m" => seconds(60),
            "h" => seconds(3600),
            "d" => seconds(86_400),
            _ => return Err(err()),
        };
        let at_most = || {
            format!(
                "bad {what} '{raw}': at most {}",
                HumanDuration(*bounds.end())
            )
        };
        let duration = duration.ok_or_else(at_most)?;
        if duration < *bounds.start() {
            return Err(format!(
                "bad {what} '{raw}': at least {}",
                HumanDuration(*bounds.start())
            ));
        }
        if duration > *bounds.end() {
            return Err(at_most());
        }
        Ok(HumanDuration(duration))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(value: Duration) -> Self {
        HumanDuration(value)
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        HumanDuration::parse(&value)
    }
}

impl From<HumanDuration> for String {
    fn from(value: HumanDuration) -> Self {
        value.to_string()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let s = self.0.as_secs();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if s.is_multiple_of(86_400) && s > 0 {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3600) && s > 0 {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) && s > 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

crate::string_schema!(HumanDuration);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        for (raw, secs) in [("90s", 90), ("10m", 600), ("2h", 7200), ("3d", 259_200)] {
            assert_eq!(
                HumanDuration::parse(raw).unwrap().get(),
                Duration::from_secs(secs)
            );
            assert_eq!(HumanDuration::parse(raw).unwrap().to_string(), raw);
        }
        assert_eq!(
            HumanDuration::parse("500ms").unwrap().get(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn each_use_sets_its_bounds_and_is_named_in_the_error() {
        let timeout = Duration::from_millis(1)..=Duration::from_secs(300);
        assert_eq!(
            HumanDuration::parse_within("2m", "timeout", timeout.clone())
                .unwrap()
                .get(),
            Duration::from_secs(120)
        );
        let zero = HumanDuration::parse_within("0s", "timeout", timeout.clone()).unwrap_err();
        assert_eq!(zero, "bad timeout '0s': at least 1ms");
        let long = HumanDuration::parse_within("6m", "timeout", timeout).unwrap_err();
        assert_eq!(long, "bad timeout '6m': at most 5m");
        assert!(HumanDuration::parse("0s").is_ok(), "a workflow may wait 0s");
        for huge in [
            "99999999999999ms",
            "9000000000000000000ms",
            "18446744073709551615d",
        ] {
            let err = HumanDuration::parse(huge).unwrap_err();
            assert!(err.contains("at most 366d"), "{huge}: {err}");
        }
    }

    #[test]
    fn bad_durations_say_how_to_write_them() {
        for raw in ["", "10", "m", "10 minutes", "1.5h", "-3s", "10w", "999999d"] {
            let err = HumanDuration::parse(raw).unwrap_err();
            assert!(err.contains("bad duration"), "{raw}: {err}");
        }
    }
}
