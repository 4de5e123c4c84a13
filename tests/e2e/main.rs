//! Black-box tests of the whole pipeline against real PostgreSQL and RabbitMQ:
//! signed webhooks in, the fake Graph API (or the sandbox) out.

mod ai;
mod bad_data;
mod api;
mod api_fuzz;
mod batching;
mod calls;
mod configuration;
mod consumer_panics;
mod contacts;
mod control;
mod dispatch;
mod error_classes;
mod examples;
mod fake_graph;
mod faults;
mod flows;
mod graph_answers;
mod harness;
mod http_limits;
mod opt_out;
mod outbound;
mod parsers_fuzz;
mod pipeline;
mod process;
mod proxy;
mod retention;
mod retries;
mod schedules;
mod senders;
mod states;
mod stranded;
mod step_retry;
mod steps_misc;
mod template_catalog;
