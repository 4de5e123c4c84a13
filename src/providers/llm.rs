//! LLM provider: OpenAI-compatible chat completions for the named assistants of the configuration.

/// The assistants named in the configuration (filled in by the AI step's work).
#[derive(Clone, Debug, Default)]
pub struct Assistants {}
