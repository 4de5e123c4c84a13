//! The template catalog: the approved templates Herald knows (name, language, category, body
//! parameters, status), from `templates.yaml`. `herald workflows validate` checks `send_template`
//! steps against it when the file exists; at run time the same entries seed the `templates` table
//! (see the parent module), where sends are checked with [`check_send`].

use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;

use std::collections::BTreeMap;

pub use crate::domain::{TemplateCategory as Category, TemplateStatus};
pub use crate::store::templates::KnownTemplate;
use crate::{
    domain::{LanguageCode, TemplateName},
    expr::Text,
};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub templates: Vec<TemplateSpec>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub name: TemplateName,
    pub language: LanguageCode,
    /// marketing, utility or authentication.
    pub category: Category,
    /// Number of positional body parameters (`{{1}}`, `{{2}}`, ...).
    #[serde(default)]
    pub body_parameters: usize,
    /// Names of the body parameters of a template with named parameters.
    #[serde(default)]
    pub named_parameters: Vec<String>,
    /// The body text as approved, for reference.
    #[serde(default)]
    pub body: Option<String>,
    /// The template's status at Meta (default APPROVED): only approved templates are sent.
    #[serde(default)]
    pub status: TemplateStatus,
}

/// A `send_template` step's variables: positional (`{{1}}`, `{{2}}`, ...) or named.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Variables {
    Positional(Vec<Text>),
    Named(BTreeMap<String, Text>),
}

impl Default for Variables {
    fn default() -> Self {
        Variables::Positional(Vec::new())
    }
}

/// Why the body variables a step gives do not fit a template with `body_parameters` positional
/// or `named` named parameters; `None` when they fit.
pub fn variables_mismatch(
    body_parameters: usize,
    named: &[String],
    given: &Variables,
) -> Option<String> {
    match given {
        Variables::Positional(list) if list.len() != body_parameters || !named.is_empty() => {
            Some(if named.is_empty() {
                format!(
                    "takes {body_parameters} body variables, the step gives {}",
                    list.len()
                )
            } else {
                format!(
                    "takes the named variables {named:?}, the step gives {} positional",
                    list.len()
                )
            })
        }
        Variables::Named(map) => {
            let mut given: Vec<&String> = map.keys().collect();
            let mut wanted: Vec<&String> = named.iter().collect();
            given.sort();
            wanted.sort();
            (given != wanted).then(|| {
                if named.is_empty() {
                    format!(
                        "takes {body_parameters} body variables, the step gives the named {given:?}"
                    )
                } else {
                    format!("takes the named variables {wanted:?}, the step gives {given:?}")
                }
            })
        }
        _ => None,
    }
}

/// The run-time check of a send against the catalog: the template must be known, APPROVED,
/// and take exactly the variables given. The error says which; it reads as "Template not found".
pub fn check_send(
    known: Option<&KnownTemplate>,
    name: &TemplateName,
    language: &LanguageCode,
    given: &Variables,
) -> Result<(), String> {
    let Some(known) = known else {
        return Err(format!(
            "Template not found: '{name}' ({language}) is unknown to the template catalog"
        ));
    };
    if known.status != TemplateStatus::Approved {
        return Err(format!(
            "Template not found: '{name}' ({language}) has status {}, not APPROVED",
            known.status
        ));
    }
    let count = usize::try_from(known.body_parameters).unwrap_or_default();
    match variables_mismatch(count, &known.named_parameters, given) {
        Some(reason) => Err(format!(
            "Template not found: '{name}' ({language}) {}",
            reason.replacen("takes", "expects", 1)
        )),
        None => Ok(()),
    }
}

impl Catalog {
    /// Reads the catalog; `Ok(None)` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<Catalog>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
        };
        serde_saphyr::from_str(&text).map(Some).map_err(|e| {
            let line = e
                .location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default();
            let reason = e.to_string();
            format!(
                "{}{line}: {}",
                path.display(),
                reason.lines().next().unwrap_or_default()
            )
        })
    }

    pub fn find(&self, name: &TemplateName, language: &LanguageCode) -> Option<&TemplateSpec> {
        self.templates
            .iter()
            .find(|t| &t.name == name && &t.language == language)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_reads_templates_and_rejects_unknown_fields() {
        let good = "templates:\n  - name: welcome\n    language: en-US\n    category: utility\n    body_parameters: 1\n";
        let c: Catalog = serde_saphyr::from_str(good).unwrap();
        let t = c
            .find(
                &TemplateName::parse("welcome").unwrap(),
                &LanguageCode::parse("en_US").unwrap(),
            )
            .unwrap();
        assert_eq!(t.body_parameters, 1);
        assert_eq!(t.category, Category::Utility);
        assert!(
            serde_saphyr::from_str::<Catalog>(&good.replace("body_parameters", "colour")).is_err()
        );
    }

    fn known(status: &str, count: i32, named: &[&str]) -> KnownTemplate {
        KnownTemplate {
            category: Category::Utility,
            status: TemplateStatus::parse(status).unwrap(),
            body_parameters: count,
            named_parameters: named.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn positional(n: usize) -> Variables {
        Variables::Positional(
            (0..n)
                .map(|i| crate::expr::Text::parse(&format!("v{i}")).unwrap())
                .collect(),
        )
    }

    fn named(names: &[&str]) -> Variables {
        Variables::Named(
            names
                .iter()
                .map(|n| (n.to_string(), crate::expr::Text::parse("x").unwrap()))
                .collect(),
        )
    }

    fn check(known: Option<&KnownTemplate>, given: &Variables) -> Result<(), String> {
        check_send(
            known,
            &TemplateName::parse("order_update").unwrap(),
            &LanguageCode::parse("pt_BR").unwrap(),
            given,
        )
    }

    #[test]
    fn an_approved_template_with_the_right_variables_passes_the_send_check() {
        assert_eq!(
            check(Some(&known("APPROVED", 2, &[])), &positional(2)),
            Ok(())
        );
        assert_eq!(
            check(
                Some(&known("APPROVED", 0, &["name", "day"])),
                &named(&["day", "name"])
            ),
            Ok(())
        );
    }

    #[test]
    fn the_send_check_says_whether_the_template_is_unknown_not_approved_or_takes_other_variables() {
        assert_eq!(
            check(None, &positional(0)).unwrap_err(),
            "Template not found: 'order_update' (pt_BR) is unknown to the template catalog"
        );
        assert_eq!(
            check(Some(&known("PAUSED", 0, &[])), &positional(0)).unwrap_err(),
            "Template not found: 'order_update' (pt_BR) has status PAUSED, not APPROVED"
        );
        assert_eq!(
            check(Some(&known("APPROVED", 2, &[])), &positional(1)).unwrap_err(),
            "Template not found: 'order_update' (pt_BR) expects 2 body variables, the step gives 1"
        );
        assert_eq!(
            check(Some(&known("APPROVED", 0, &["name"])), &named(&["nome"])).unwrap_err(),
            "Template not found: 'order_update' (pt_BR) expects the named variables [\"name\"], the step gives [\"nome\"]"
        );
        let err = check(Some(&known("APPROVED", 0, &["name"])), &positional(1)).unwrap_err();
        assert!(
            err.contains("expects the named variables [\"name\"]"),
            "{err}"
        );
    }

    #[test]
    fn a_catalog_status_is_optional_defaults_to_approved_and_is_checked() {
        let base = "templates:\n  - name: promo\n    language: en_US\n    category: marketing\n";
        let c: Catalog = serde_saphyr::from_str(base).unwrap();
        assert_eq!(c.templates[0].status, TemplateStatus::Approved);
        let c: Catalog = serde_saphyr::from_str(&format!("{base}    status: paused\n")).unwrap();
        assert_eq!(c.templates[0].status.as_str(), "PAUSED");
        let c: Catalog =
            serde_saphyr::from_str(&format!("{base}    status: PENDING_DELETION\n")).unwrap();
        assert_eq!(c.templates[0].status, TemplateStatus::PendingDeletion);
        let err = serde_saphyr::from_str::<Catalog>(&format!("{base}    status: sleepy\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'sleepy' is not a template status"), "{err}");
    }
}
