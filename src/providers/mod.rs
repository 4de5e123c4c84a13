//! Providers: the outside APIs steps call. `whatsapp` owns the Graph API's request and error shapes.

pub mod llm;
pub mod notify;
pub mod whatsapp;
