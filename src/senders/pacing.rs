//! Pacing: per-sender throughput and per-recipient gaps, shared by every worker process through
//! PostgreSQL (`herald_reserve_sends`, one statement for the sends that arrive together; see
//! `store::sender_pacing`). Limits come from
//! `HERALD_SENDER_RATE` / `HERALD_RECIPIENT_GAP` / `HERALD_RECIPIENT_BURST` and per-sender
//! overrides in `senders.yaml` (`HERALD_SENDERS`), parsed strictly.

use std::{collections::HashMap, path::Path, time::Duration};

use anyhow::Context;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::domain::{HumanDuration, Rate};
pub use crate::store::sender_pacing::{Limit, Reservation, Reserve, SlotRequest};

/// Every sender's limits, and how pacing behaves.
#[derive(Clone, Debug)]
pub struct Limits {
    pub default: Limit,
    pub senders: HashMap<String, Limit>,
    /// A slot farther away than this is not slept on: the step is deferred through a durable
    /// retry timer (without using an attempt).
    pub max_wait: Duration,
    /// An offline sender fails fast; after this long, one send goes through as a probe.
    pub recheck: Duration,
}

impl Limits {
    pub fn for_sender(&self, sender: &str) -> Limit {
        self.senders.get(sender).copied().unwrap_or(self.default)
    }
}

/// `senders.yaml`: per-sender settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendersFile {
    pub senders: Vec<SenderSpec>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SenderSpec {
    /// The sender's phone_number_id.
    pub id: String,
    /// The number as Meta shows it (`+1 555 078 3881`): quality webhooks name a sender by it.
    #[serde(default)]
    pub display_phone_number: Option<String>,
    #[serde(default)]
    pub messages_per_second: Option<Rate>,
    #[serde(default)]
    pub recipient_gap: Option<HumanDuration>,
    #[serde(default)]
    pub recipient_burst: Option<u32>,
}

/// The senders file, read: limits per sender and display numbers to record.
#[derive(Debug, Default)]
pub struct SendersConfig {
    pub limits: HashMap<String, Limit>,
    /// (phone_number_id, display number in digits).
    pub display_numbers: Vec<(String, String)>,
}

/// Only the digits of a phone number as Meta displays it.
pub fn digits(display: &str) -> String {
    display.chars().filter(char::is_ascii_digit).collect()
}

impl SendersConfig {
    /// Reads `path`; a missing file means no overrides.
    pub fn load(path: &Path, default: Limit) -> anyhow::Result<SendersConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SendersConfig::default());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("read {} (HERALD_SENDERS)", path.display()));
            }
        };
        SendersConfig::parse(&text, default)
            .with_context(|| format!("{} (HERALD_SENDERS)", path.display()))
    }

    pub fn parse(text: &str, default: Limit) -> anyhow::Result<SendersConfig> {
        let file: SendersFile = serde_saphyr::from_str(text).map_err(|e| {
            let reason = e.to_string();
            anyhow::anyhow!("{}", reason.lines().next().unwrap_or_default())
        })?;
        let mut config = SendersConfig::default();
        for spec in file.senders {
            let id = spec.id.trim().to_string();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                anyhow::bail!(
                    "sender id '{}' is not a phone_number_id (letters and digits)",
                    spec.id
                );
            }
            if spec.recipient_burst == Some(0) {
                anyhow::bail!("sender {id}: recipient_burst must be at least 1");
            }
            let limit = Limit {
                rate: spec.messages_per_second.unwrap_or(default.rate),
                recipient_gap: spec
                    .recipient_gap
                    .map(HumanDuration::get)
                    .unwrap_or(default.recipient_gap),
                recipient_burst: spec.recipient_burst.unwrap_or(default.recipient_burst),
            };
            if config.limits.insert(id.clone(), limit).is_some() {
                anyhow::bail!("sender {id} is listed twice");
            }
            if let Some(display) = spec.display_phone_number {
                let d = digits(&display);
                if d.len() < 6 {
                    anyhow::bail!(
                        "sender {id}: display_phone_number '{display}' has too few digits"
                    );
                }
                config.display_numbers.push((id, d));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> Limit {
        Limit {
            rate: Rate::try_from(80.0).unwrap(),
            recipient_gap: Duration::from_secs(6),
            recipient_burst: 5,
        }
    }

    #[test]
    fn a_rate_must_be_positive_and_finite() {
        assert_eq!(Rate::parse("80").unwrap().get(), 80.0);
        assert_eq!(
            Rate::parse("0.5").unwrap().interval(),
            Duration::from_secs(2)
        );
        for bad in ["0", "-3", "NaN", "inf", "fast", "20000"] {
            assert!(Rate::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_senders_file_overrides_limits_per_sender() {
        let config = SendersConfig::parse(
            "senders:\n  - id: \"106540352242922\"\n    display_phone_number: \"+1 555 078 3881\"\n    messages_per_second: 20\n    recipient_gap: 2s\n  - id: \"200\"\n    recipient_burst: 1\n",
            default(),
        )
        .unwrap();
        let first = config.limits["106540352242922"];
        assert_eq!(first.rate.get(), 20.0);
        assert_eq!(first.recipient_gap, Duration::from_secs(2));
        assert_eq!(first.recipient_burst, 5, "unset fields keep the default");
        assert_eq!(config.limits["200"].rate.get(), 80.0);
        assert_eq!(config.limits["200"].recipient_burst, 1);
        assert_eq!(
            config.display_numbers,
            [("106540352242922".to_string(), "15550783881".to_string())]
        );
    }

    #[test]
    fn mistakes_in_the_senders_file_are_refused_with_a_reason() {
        let cases = [
            ("senders:\n  - id: \"1\"\n    rate: 5\n", "unknown field"),
            (
                "senders:\n  - id: \"1\"\n    recipient_gap: soon\n",
                "bad duration",
            ),
            (
                "senders:\n  - id: \"1\"\n    messages_per_second: 0\n",
                "bad rate",
            ),
            ("senders:\n  - id: \"1\"\n  - id: \"1\"\n", "listed twice"),
            ("senders:\n  - id: \"a b\"\n", "not a phone_number_id"),
            (
                "senders:\n  - id: \"1\"\n    recipient_burst: 0\n",
                "at least 1",
            ),
            (
                "senders:\n  - id: \"1\"\n    display_phone_number: \"+1\"\n",
                "too few digits",
            ),
            ("nonsense: true\n", "unknown field"),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", SendersConfig::parse(text, default()).unwrap_err());
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_missing_senders_file_means_no_overrides() {
        let config =
            SendersConfig::load(Path::new("/nonexistent/herald/senders.yaml"), default()).unwrap();
        assert!(config.limits.is_empty());
    }

    #[test]
    fn limits_fall_back_to_the_default() {
        let limits = Limits {
            default: default(),
            senders: HashMap::from([(
                "1".to_string(),
                Limit {
                    rate: Rate::try_from(10.0).unwrap(),
                    ..default()
                },
            )]),
            max_wait: Duration::from_secs(3),
            recheck: Duration::from_secs(300),
        };
        assert_eq!(limits.for_sender("1").rate.get(), 10.0);
        assert_eq!(limits.for_sender("2"), default());
    }
}
