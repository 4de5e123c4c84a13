//! Loads `*.yaml` / `*.yml` workflow files and reports every mistake with file, line and reason.

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
};

use super::{Workflow, WorkflowSpec};
use crate::templates::catalog::Catalog;
use crate::{domain::EventType, steps::StepKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

/// Every enabled workflow, indexed by trigger event type.
#[derive(Debug, Default)]
pub struct Workflows {
    all: Vec<Workflow>,
}

impl Workflows {
    pub fn new(all: Vec<Workflow>) -> Self {
        Workflows { all }
    }
    pub fn all(&self) -> &[Workflow] {
        &self.all
    }
    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.all.iter().find(|w| w.name == name)
    }
    /// Whether any workflow can wait for a contact's reply (so inbound messages must be checked
    /// against waiting runs).
    pub fn has_waits(&self) -> bool {
        self.all.iter().any(|w| {
            w.steps
                .iter()
                .any(|s| matches!(s.kind, StepKind::WaitForResponse(_)))
        })
    }

    /// Enabled workflows whose trigger names this event type (their filters are not yet applied).
    pub fn for_event(&self, event_type: EventType) -> impl Iterator<Item = &Workflow> {
        self.all
            .iter()
            .filter(move |w| w.enabled && w.trigger.event == event_type)
    }
}

/// Parses one workflow from YAML text; `file` is only used in error messages.
pub fn parse_workflow(file: &Path, text: &str) -> Result<Workflow, Vec<LoadError>> {
    parse_workflow_with(file, text, None)
}

/// The line each step starts on, in layout order (steps are laid out in document order).
fn step_lines(text: &str) -> Vec<u64> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let rest = line.trim_start().strip_prefix('-')?.trim_start();
            let key = rest.split(':').next()?;
            StepKind::TYPE_NAMES.contains(&key).then_some(i as u64 + 1)
        })
        .collect()
}

/// The line of the workflow's own top-level `retry:`.
fn retry_line(text: &str) -> Option<u64> {
    text.lines()
        .position(|l| l.starts_with("retry:"))
        .map(|i| i as u64 + 1)
}

/// Every `steps.<id>` reference in the text, with its line.
fn step_references(text: &str) -> Vec<(u64, String)> {
    let mut refs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        while let Some(pos) = rest.find("steps.") {
            let before = line[..offset + pos].chars().next_back();
            let after = &rest[pos + 6..];
            let id: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            if !id.is_empty() && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                refs.push((i as u64 + 1, id));
            }
            offset += pos + 6;
            rest = after;
        }
    }
    refs
}

/// Parses one workflow and checks it against the template catalog when one is given.
pub fn parse_workflow_with(
    file: &Path,
    text: &str,
    catalog: Option<&Catalog>,
) -> Result<Workflow, Vec<LoadError>> {
    let err = |line: Option<u64>, reason: String| LoadError {
        file: file.to_path_buf(),
        line,
        reason,
    };
    let spec: WorkflowSpec = serde_saphyr::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let reason = e.to_string();
        // The library's message repeats the position; keep the reason.
        let reason = reason.lines().next().unwrap_or_default();
        let reason = reason.strip_prefix("error: ").unwrap_or(reason);
        let reason = match reason.split_once(": ") {
            Some((position, rest)) if position.starts_with("line ") => rest,
            _ => reason,
        };
        let reason = reason.to_string();
        vec![err(line, reason)]
    })?;
    let mut errors = Vec::new();
    if spec.name.trim().is_empty() {
        errors.push(err(None, "name must not be empty".into()));
    }
    if spec.steps.is_empty() {
        errors.push(err(None, "a workflow needs at least one step".into()));
    }
    if let Some(Err(reason)) = spec.retry.map(|r| r.check()) {
        errors.push(err(retry_line(text), reason));
    }
    let schedule = spec.trigger.event == EventType::Schedule;
    if schedule && spec.trigger.cron.is_none() {
        errors.push(err(
            None,
            "a schedule trigger needs `cron` (e.g. '0 9 * * *')".into(),
        ));
    }
    if !schedule
        && (spec.trigger.cron.is_some()
            || spec.trigger.timezone.is_some()
            || spec.trigger.for_each.is_some()
            || spec.trigger.missed != super::Missed::default())
    {
        errors.push(err(
            None,
            "`cron`, `timezone`, `missed` and `for_each` belong to `event: schedule`".into(),
        ));
    }
    if let Some(for_each) = &spec.trigger.for_each {
        if for_each.group.trim().is_empty() {
            errors.push(err(None, "`for_each.group` must name a group".into()));
        }
        if let Some(rate) = for_each.rate
            && !(0.01..=1000.0).contains(&rate)
        {
            errors.push(err(
                None,
                format!(
                    "`for_each.rate` must be between 0.01 and 1000 runs per second (got {rate})"
                ),
            ));
        }
    }
    let steps = super::flatten(&spec.steps);
    let lines = step_lines(text);
    let line_of = |index: usize| lines.get(index).copied();
    let mut ids = HashSet::new();
    for (index, step) in steps.iter().enumerate() {
        if !ids.insert(step.id.clone()) {
            errors.push(err(
                line_of(index),
                format!("step id '{}' is used twice", step.id),
            ));
        }
        if let Err(reason) = step.kind.check() {
            errors.push(err(line_of(index), format!("step '{}': {reason}", step.id)));
        }
        if let Some(Err(reason)) = step.kind.retry().map(|r| r.check()) {
            // The step's own `retry:` line: after its first line, before the next step's.
            let line = line_of(index).map(|first| {
                let end = line_of(index + 1).unwrap_or(u64::MAX);
                text.lines()
                    .enumerate()
                    .map(|(i, l)| (i as u64 + 1, l))
                    .find(|(n, l)| *n > first && *n < end && l.trim_start().starts_with("retry:"))
                    .map_or(first, |(n, _)| n)
            });
            errors.push(err(line, format!("step '{}': {reason}", step.id)));
        }
        if let (Some(catalog), StepKind::SendTemplate(t)) = (catalog, &step.kind)
            && let Some(reason) = check_template(catalog, t)
        {
            errors.push(err(line_of(index), format!("step '{}': {reason}", step.id)));
        }
    }
    // A step may read only the outputs of steps laid out before it.
    for (line, id) in step_references(text) {
        let user = lines.iter().rposition(|l| *l <= line);
        match steps.iter().position(|s| s.id == id) {
            None => errors.push(err(
                Some(line),
                format!("reference to step '{id}', which does not exist"),
            )),
            Some(target) => match user {
                None => errors.push(err(
                    Some(line),
                    format!("the trigger cannot read step '{id}': no step has run yet"),
                )),
                Some(user) if target >= user => errors.push(err(
                    Some(line),
                    format!(
                        "step '{}' reads step '{id}', which does not run before it",
                        steps[user].id
                    ),
                )),
                Some(_) => {}
            },
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Workflow {
        name: spec.name,
        description: spec.description,
        enabled: spec.enabled,
        trigger: spec.trigger,
        retry: spec.retry,
        steps,
        file: file.to_path_buf(),
    })
}

fn check_template(
    catalog: &Catalog,
    step: &crate::steps::send_template::SendTemplate,
) -> Option<String> {
    let Some(spec) = catalog.find(&step.template, &step.language) else {
        return Some(format!(
            "Template not found: '{}' ({}) is not in the template catalog",
            step.template, step.language
        ));
    };
    crate::templates::catalog::variables_mismatch(
        spec.body_parameters,
        &spec.named_parameters,
        &step.variables,
    )
    .map(|reason| format!("template '{}' ({}) {reason}", step.template, step.language))
}

pub fn load_file(path: &Path, catalog: Option<&Catalog>) -> Result<Workflow, Vec<LoadError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![LoadError {
            file: path.to_path_buf(),
            line: None,
            reason: format!("cannot read: {e}"),
        }]
    })?;
    parse_workflow_with(path, &text, catalog)
}

/// Loads every workflow in `dir`; returns all the errors of all the files at once.
pub fn load_dir(dir: &Path) -> Result<Workflows, Vec<LoadError>> {
    load_dir_with(dir, None)
}

/// Loads every workflow in `dir`, checking `send_template` steps against `catalog`.
pub fn load_dir_with(dir: &Path, catalog: Option<&Catalog>) -> Result<Workflows, Vec<LoadError>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![LoadError {
            file: dir.to_path_buf(),
            line: None,
            reason: format!("cannot read the workflows folder: {e}"),
        }]
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut errors = Vec::new();
    let mut workflows: Vec<Workflow> = Vec::new();
    for file in files {
        match load_file(&file, catalog) {
            Ok(w) => {
                if let Some(other) = workflows.iter().find(|o| o.name == w.name) {
                    errors.push(LoadError {
                        file: file.clone(),
                        line: None,
                        reason: format!(
                            "workflow name '{}' is already used by {}",
                            w.name,
                            other.file.display()
                        ),
                    });
                } else {
                    workflows.push(w);
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(Workflows::new(workflows))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Workflow, Vec<LoadError>> {
        parse_workflow(Path::new("test.yaml"), text)
    }

    const GOOD: &str = r#"
name: welcome
trigger:
  event: whatsapp.message_received
  filter: "trigger.message_type == 'text'"
steps:
  - send_template:
      template: welcome
      language: en_US
      variables: ["{{ trigger.contact_name }}"]
  - send_text:
      id: thanks
      text: "Thanks!"
"#;

    #[test]
    fn a_good_workflow_loads_with_generated_step_ids() {
        let w = parse(GOOD).unwrap();
        assert_eq!(w.name, "welcome");
        assert_eq!(w.steps[0].id, "send_template_1");
        assert_eq!(w.steps[1].id, "thanks");
    }

    #[test]
    fn an_unknown_step_type_is_reported_with_its_line() {
        let text = GOOD.replace("send_text:", "send_fax:");
        let errs = parse(&text).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(11), "{}", errs[0]);
        assert!(errs[0].reason.contains("send_fax"), "{}", errs[0]);
    }

    #[test]
    fn an_unknown_field_is_reported_with_its_line() {
        let text = GOOD.replace("language: en_US", "language: en_US\n      colour: red");
        let errs = parse(&text).unwrap_err();
        assert!(errs[0].reason.contains("colour"), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(10), "{}", errs[0]);
    }

    #[test]
    fn a_bad_filter_expression_is_reported() {
        let text = GOOD.replace("trigger.message_type == 'text'", "trigger.message_type ==");
        let errs = parse(&text).unwrap_err();
        assert!(errs[0].reason.contains("bad expression"), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(5), "{}", errs[0]);
    }

    #[test]
    fn an_unknown_event_type_is_reported() {
        let text = GOOD.replace("whatsapp.message_received", "whatsapp.carrier_pigeon");
        let errs = parse(&text).unwrap_err();
        assert!(errs[0].reason.contains("carrier_pigeon"), "{}", errs[0]);
    }

    #[test]
    fn nested_steps_are_laid_out_flat_with_their_continuations() {
        let text = r#"
name: nested
trigger:
  event: call.ended
steps:
  - delay: { duration: 10m }
  - branch:
      id: by_outcome
      when:
        - condition: 'trigger.outcome == "booked"'
          steps:
            - send_text: { id: booked, text: "b1" }
            - send_text: { id: booked2, text: "b2" }
        - condition: 'trigger.outcome == "empty"'
          steps: []
      else:
        - send_text: { id: other, text: "o" }
  - send_text: { id: last, text: "bye" }
"#;
        let w = parse(text).unwrap();
        let ids: Vec<&str> = w.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "delay_1",
                "by_outcome",
                "booked",
                "booked2",
                "other",
                "last"
            ]
        );
        let next: Vec<Option<usize>> = w.steps.iter().map(|s| s.next).collect();
        assert_eq!(next, [Some(1), Some(5), Some(3), Some(5), Some(5), None]);
        assert_eq!(w.steps[1].arms, [Some(2), Some(5), Some(4)]);
        assert_eq!(
            w.arm_target(1, 1),
            Some(5),
            "an empty arm continues after the branch"
        );
    }

    #[test]
    fn a_delay_needs_exactly_one_of_duration_or_until() {
        let text = GOOD.replace(
            "  - send_text:\n      id: thanks",
            "  - delay: {}\n  - send_text:\n      id: thanks",
        );
        let errs = parse(&text).unwrap_err();
        assert!(errs[0].reason.contains("exactly one of"), "{}", errs[0]);
    }

    #[test]
    fn a_bad_duration_is_reported_with_its_line() {
        let text = GOOD.replace(
            "  - send_text:\n      id: thanks",
            "  - delay: { duration: 10 minutes }\n  - send_text:\n      id: thanks",
        );
        let errs = parse(&text).unwrap_err();
        assert!(errs[0].reason.contains("bad duration"), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(11), "{}", errs[0]);
    }

    #[test]
    fn a_duplicate_step_id_is_reported() {
        let text = GOOD.replace("id: thanks", "id: send_template_1");
        let errs = parse(&text).unwrap_err();
        assert!(errs[0].reason.contains("used twice"), "{}", errs[0]);
    }

    #[test]
    fn an_invalid_static_phone_number_is_reported() {
        let text = GOOD.replace(
            "template: welcome",
            "template: welcome\n      to: '0151 1234'",
        );
        let errs = parse(&text).unwrap_err();
        assert!(
            errs[0].reason.contains("Invalid phone number"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn a_step_may_set_its_own_retry_policy() {
        let text = GOOD.replace(
            "      id: thanks\n",
            "      id: thanks\n      retry: { attempts: 3, wait: 30s }\n",
        );
        let w = parse(&text).unwrap();
        let policy = w.steps[1].kind.retry().unwrap();
        assert_eq!(policy.attempts, 3);
        assert_eq!(policy.wait.get(), std::time::Duration::from_secs(30));
        assert_eq!(w.steps[0].kind.retry(), None);
        let none = GOOD.replace(
            "      id: thanks\n",
            "      id: thanks\n      retry: { attempts: 0, wait: 1s }\n",
        );
        assert_eq!(
            parse(&none).unwrap().steps[1]
                .kind
                .retry()
                .unwrap()
                .attempts,
            0
        );
    }

    #[test]
    fn a_bad_step_retry_policy_is_reported_with_the_steps_line() {
        for (retry, expected) in [
            (
                "{ attempts: 500, wait: 30s }",
                "step 'thanks': retry: attempts 500 is more than 100",
            ),
            (
                "{ attempts: 2, wait: 0s }",
                "step 'thanks': retry: wait 0s is shorter than 1s",
            ),
            ("{ attempts: 2, wait: soon }", "bad duration 'soon'"),
            ("{ attempts: -1, wait: 1s }", "invalid u32"),
            ("{ attempts: 2 }", "wait"),
            ("{ attempts: 2, wait: 1s, jitter: 1s }", "jitter"),
        ] {
            let text = GOOD.replace(
                "      id: thanks\n",
                &format!("      id: thanks\n      retry: {retry}\n"),
            );
            let errs = parse(&text).unwrap_err();
            let shown = errs[0].to_string();
            assert!(shown.contains(expected), "{retry}: {shown}");
            assert!(
                errs[0].line == Some(13),
                "{retry}: the retry's line: {shown}"
            );
        }
    }

    #[test]
    fn a_bad_workflow_retry_policy_is_reported_with_its_line() {
        let text = GOOD.replace("steps:\n", "retry: { attempts: 101, wait: 1m }\nsteps:\n");
        let errs = parse(&text).unwrap_err();
        assert_eq!(errs[0].line, Some(6), "{}", errs[0]);
        assert!(
            errs[0].reason.contains("attempts 101 is more than 100"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn the_opt_out_example_runs_only_for_keyword_messages_and_the_ai_reply_skips_them() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows");
        let confirm = load_file(&root.join("opt-out-confirmation.yaml"), None).unwrap();
        let ai = load_file(&root.join("ai-auto-reply.yaml"), None).unwrap();
        let data = |opt_out: serde_json::Value| serde_json::json!({"trigger": {"message_type": "text", "text": "STOP", "opt_out": opt_out}});
        let filter = |w: &Workflow| w.trigger.filter.clone().unwrap();
        assert_eq!(
            filter(&confirm).evaluate(&data("opted_out".into())),
            Ok(true)
        );
        assert_eq!(
            filter(&confirm).evaluate(&data("opted_in".into())),
            Ok(true)
        );
        assert_eq!(
            filter(&confirm).evaluate(&data(serde_json::Value::Null)),
            Ok(false)
        );
        assert_eq!(filter(&ai).evaluate(&data("opted_out".into())), Ok(false));
        assert_eq!(
            filter(&ai).evaluate(&data(serde_json::Value::Null)),
            Ok(true)
        );
    }
}

#[cfg(test)]
mod broken_files {
    use std::path::PathBuf;

    use super::*;

    /// Every file in tests/workflows/broken/ fails with the message its first line expects.
    #[test]
    fn each_broken_workflow_fails_with_its_expected_message() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let catalog = Catalog::load(&root.join("templates.yaml"))
            .unwrap()
            .unwrap();
        let dir = root.join("tests/workflows/broken");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{} has no '# expect: ' line", path.display()));
            let errors = parse_workflow_with(&path, &text, Some(&catalog))
                .err()
                .unwrap_or_else(|| panic!("{} loaded without error", path.display()));
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert!(
                shown.iter().any(|e| e.contains(expect)),
                "{}: expected '{expect}' in {shown:#?}",
                path.display()
            );
            checked += 1;
        }
        assert!(checked >= 15, "only {checked} broken files");
    }
}
