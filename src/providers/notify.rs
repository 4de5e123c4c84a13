//! Team notifications: a Slack-compatible incoming webhook (`HERALD_NOTIFY_WEBHOOK_URL`) and the log.

/// Sends notifications to the team (filled in by the notify step's work).
#[derive(Clone, Debug, Default)]
pub struct Notifier {}
