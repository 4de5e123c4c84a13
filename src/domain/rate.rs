//! A send rate: messages per second, positive and bounded.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// Messages per second: a positive, finite number (at most 10,000).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(try_from = "f64")]
pub struct Rate(f64);

impl Rate {
    pub fn parse(raw: &str) -> Result<Rate, String> {
        let n: f64 = raw
            .trim()
            .parse()
            .map_err(|_| format!("bad rate '{raw}': write messages per second, e.g. 80"))?;
        Rate::try_from(n)
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// The time between two messages at this rate.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }
}

impl TryFrom<f64> for Rate {
    type Error = String;
    fn try_from(n: f64) -> Result<Self, Self::Error> {
        if n.is_finite() && n > 0.0 && n <= 10_000.0 {
            Ok(Rate(n))
        } else {
            Err(format!(
                "bad rate {n}: messages per second must be more than 0 and at most 10000"
            ))
        }
    }
}
