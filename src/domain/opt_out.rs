//! Opt-out keywords: an inbound text that is exactly a keyword (trimmed, any case) opts the
//! contact out of marketing templates or back in. Pure: the ingress store applies the decision.

use std::fmt;

/// What an inbound message does to the contact's opt-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptOutChange {
    OptedOut,
    OptedIn,
}

impl OptOutChange {
    /// As written in the event (`trigger.opt_out`).
    pub fn as_str(self) -> &'static str {
        match self {
            OptOutChange::OptedOut => "opted_out",
            OptOutChange::OptedIn => "opted_in",
        }
    }
}

impl fmt::Display for OptOutChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The configured keywords (`HERALD_OPT_OUT_KEYWORDS`, `HERALD_OPT_IN_KEYWORDS`), kept uppercase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptOutKeywords {
    opt_out: Vec<String>,
    opt_in: Vec<String>,
}

/// The message types whose text a person typed or tapped: text, a template's quick-reply button,
/// an interactive reply button.
const KEYWORD_TYPES: [&str; 3] = ["text", "button", "button_reply"];

impl OptOutKeywords {
    pub const DEFAULT_OPT_OUT: &'static str = "STOP,UNSUBSCRIBE,PARAR,CANCELAR,SAIR";
    pub const DEFAULT_OPT_IN: &'static str = "START";

    /// Comma-separated lists; blank entries are dropped. A word may not be in both lists.
    pub fn parse(opt_out: &str, opt_in: &str) -> Result<Self, String> {
        let list = |raw: &str| -> Vec<String> {
            raw.split(',')
                .map(|k| k.trim().to_uppercase())
                .filter(|k| !k.is_empty())
                .collect()
        };
        let (opt_out, opt_in) = (list(opt_out), list(opt_in));
        if let Some(both) = opt_out.iter().find(|k| opt_in.contains(k)) {
            return Err(format!("'{both}' is both an opt-out and an opt-in keyword"));
        }
        Ok(OptOutKeywords { opt_out, opt_in })
    }

    /// The change an inbound message of `message_type` with `text` makes, if any: its whole
    /// trimmed text must equal a keyword, ignoring case ("stop" yes, "please stop" no).
    pub fn decide(&self, message_type: &str, text: Option<&str>) -> Option<OptOutChange> {
        if !KEYWORD_TYPES.contains(&message_type) {
            return None;
        }
        let text = text?.trim().to_uppercase();
        if self.opt_out.contains(&text) {
            Some(OptOutChange::OptedOut)
        } else if self.opt_in.contains(&text) {
            Some(OptOutChange::OptedIn)
        } else {
            None
        }
    }
}

impl Default for OptOutKeywords {
    fn default() -> Self {
        OptOutKeywords::parse(Self::DEFAULT_OPT_OUT, Self::DEFAULT_OPT_IN)
            .unwrap_or_else(|_| unreachable!("the default keywords are disjoint"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_keyword_in_any_case_with_spaces_opts_out_and_start_opts_back_in() {
        let k = OptOutKeywords::default();
        for text in [
            "STOP",
            "stop",
            "  Stop \n",
            "unsubscribe",
            "Parar",
            "cancelar",
            "SAIR",
        ] {
            assert_eq!(
                k.decide("text", Some(text)),
                Some(OptOutChange::OptedOut),
                "{text:?}"
            );
        }
        assert_eq!(
            k.decide("text", Some(" start")),
            Some(OptOutChange::OptedIn)
        );
    }

    #[test]
    fn a_keyword_inside_a_sentence_or_another_word_changes_nothing() {
        let k = OptOutKeywords::default();
        for text in [
            "please stop",
            "STOP!",
            "stopped",
            "don't stop me now",
            "",
            "   ",
        ] {
            assert_eq!(k.decide("text", Some(text)), None, "{text:?}");
        }
        assert_eq!(k.decide("text", None), None);
    }

    #[test]
    fn buttons_count_but_media_captions_and_other_types_do_not() {
        let k = OptOutKeywords::default();
        assert_eq!(
            k.decide("button", Some("Stop")),
            Some(OptOutChange::OptedOut)
        );
        assert_eq!(
            k.decide("button_reply", Some("STOP")),
            Some(OptOutChange::OptedOut)
        );
        assert_eq!(k.decide("image", Some("STOP")), None);
        assert_eq!(k.decide("reaction", Some("STOP")), None);
    }

    #[test]
    fn configured_keywords_replace_the_defaults() {
        let k = OptOutKeywords::parse("baja, , alto", "alta").unwrap();
        assert_eq!(k.decide("text", Some("BAJA")), Some(OptOutChange::OptedOut));
        assert_eq!(k.decide("text", Some("Alto")), Some(OptOutChange::OptedOut));
        assert_eq!(k.decide("text", Some("stop")), None);
        assert_eq!(k.decide("text", Some("alta")), Some(OptOutChange::OptedIn));
    }

    #[test]
    fn a_word_in_both_lists_is_refused() {
        let err = OptOutKeywords::parse("STOP,START", "start").unwrap_err();
        assert!(err.contains("'START' is both"), "{err}");
    }
}
