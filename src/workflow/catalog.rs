//! The template catalog: the approved templates Herald knows (name, language, category, body
//! parameters), from `templates.yaml`. `herald workflows validate` checks `send_template` steps
//! against it when the file exists.

use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::domain::{LanguageCode, TemplateName};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
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
}
