//! Quality: reads a `phone_number_quality_update` as a drop, a rise or neither. Pure; the
//! ingress stores the result with the event (one statement) and the scheduler tells the team.

use serde_json::{Map, Value};

use crate::store::senders::QualityRating;

/// What a quality webhook means for the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// The rating it reports, when it reports one.
    pub rating: Option<QualityRating>,
    /// The event itself says quality or limits went down (FLAGGED, DOWNGRADE, a lower tier).
    pub dropped: bool,
    /// Why, for the operator: "FLAGGED (TIER_10K)".
    pub reason: String,
}

/// Meta's quality names, old and new, in Herald's (GREEN, YELLOW, RED).
fn rating(raw: &str) -> Option<QualityRating> {
    match raw.trim().to_ascii_uppercase().as_str() {
        "GREEN" | "HIGH" => Some(QualityRating::Green),
        "YELLOW" | "MEDIUM" => Some(QualityRating::Yellow),
        "RED" | "LOW" => Some(QualityRating::Red),
        _ => None,
    }
}

/// Messaging-limit tiers in order (old per-number tiers and today's portfolio limits).
fn tier_rank(raw: &str) -> Option<u32> {
    Some(match raw.trim().to_ascii_uppercase().as_str() {
        "TIER_50" => 50,
        "TIER_250" => 250,
        "TIER_1K" => 1_000,
        "TIER_2K" => 2_000,
        "TIER_10K" => 10_000,
        "TIER_100K" => 100_000,
        "TIER_UNLIMITED" => u32::MAX,
        _ => return None,
    })
}

/// Reads the event, the limits and any rating the `value` carries (leniently: Meta's fields
/// changed over the years; see whatsapp-cloud-api.md §5.1).
pub fn assess(event: &str, value: &Map<String, Value>) -> Assessment {
    let text = |k: &str| value.get(k).and_then(Value::as_str);
    let event_upper = event.trim().to_ascii_uppercase();
    let reported = [
        "quality_rating",
        "current_quality_rating",
        "new_quality_rating",
    ]
    .iter()
    .find_map(|k| text(k).and_then(rating));
    let previous = ["old_quality_rating", "previous_quality_rating"]
        .iter()
        .find_map(|k| text(k).and_then(rating));
    let tier_dropped = match (
        text("old_limit").and_then(tier_rank),
        text("current_limit").and_then(tier_rank),
    ) {
        (Some(old), Some(new)) => new < old,
        _ => false,
    };
    let rating_dropped = match (previous, reported) {
        (Some(old), Some(new)) => new.rank() < old.rank(),
        _ => false,
    };
    let (rating, event_dropped) = match event_upper.as_str() {
        // Meta flags a number when its quality rating reaches Low.
        "FLAGGED" => (reported.or(Some(QualityRating::Red)), true),
        "DOWNGRADE" => (reported, true),
        _ => (reported, false),
    };
    let mut reason = event_upper.clone();
    let limits: Vec<&str> = ["old_limit", "current_limit"]
        .iter()
        .filter_map(|k| text(k))
        .collect();
    match (limits.as_slice(), rating) {
        ([old, new], _) => reason.push_str(&format!(" ({old} -> {new})")),
        ([limit], _) => reason.push_str(&format!(" ({limit})")),
        _ => {}
    }
    if let Some(r) = rating {
        reason.push_str(&format!(", quality {r}"));
    }
    Assessment {
        rating,
        dropped: event_dropped || tier_dropped || rating_dropped,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn value(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn the_flagged_fixture_is_a_drop_to_red() {
        let body: Value = serde_json::from_slice(include_bytes!(
            "../../tests/fixtures/whatsapp/12-phone-number-quality-update.json"
        ))
        .unwrap();
        let v = value(body["entry"][0]["changes"][0]["value"].clone());
        let a = assess(v["event"].as_str().unwrap(), &v);
        assert!(a.dropped);
        assert_eq!(a.rating, Some(QualityRating::Red));
        assert_eq!(a.reason, "FLAGGED (TIER_10K), quality RED");
    }

    #[test]
    fn drops_rises_and_neutral_events_are_told_apart() {
        let cases = [
            ("DOWNGRADE", json!({"current_limit": "TIER_1K"}), true, None),
            ("UPGRADE", json!({"current_limit": "TIER_10K"}), false, None),
            ("UNFLAGGED", json!({}), false, None),
            (
                "THROUGHPUT_UPGRADE",
                json!({"max_daily_conversations_per_business": "TIER_2K"}),
                false,
                None,
            ),
            ("ONBOARDING", json!({}), false, None),
            (
                "ONBOARDING",
                json!({"old_limit": "TIER_10K", "current_limit": "TIER_2K"}),
                true,
                None,
            ),
            (
                "ONBOARDING",
                json!({"old_limit": "TIER_2K", "current_limit": "TIER_10K"}),
                false,
                None,
            ),
            (
                "QUALITY_UPDATE",
                json!({"old_quality_rating": "GREEN", "quality_rating": "YELLOW"}),
                true,
                Some(QualityRating::Yellow),
            ),
            (
                "QUALITY_UPDATE",
                json!({"old_quality_rating": "LOW", "quality_rating": "MEDIUM"}),
                false,
                Some(QualityRating::Yellow),
            ),
            (
                "FLAGGED",
                json!({"quality_rating": "YELLOW"}),
                true,
                Some(QualityRating::Yellow),
            ),
        ];
        for (event, v, dropped, rating) in cases {
            let a = assess(event, &value(v.clone()));
            assert_eq!(a.dropped, dropped, "{event} {v}");
            assert_eq!(a.rating, rating, "{event} {v}");
        }
    }

    #[test]
    fn ratings_are_ranked_red_below_yellow_below_green() {
        assert!(rating("RED").unwrap().rank() < rating("YELLOW").unwrap().rank());
        assert!(rating("YELLOW").unwrap().rank() < rating("GREEN").unwrap().rank());
        assert_eq!(rating("LOW"), Some(QualityRating::Red));
        assert_eq!(rating("PURPLE"), None);
    }
}
