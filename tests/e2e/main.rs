//! Black-box tests of the whole pipeline against real PostgreSQL and RabbitMQ:
//! signed webhooks in, the fake Graph API (or the sandbox) out.

mod ai;
mod calls;
mod contacts;
mod control;
mod examples;
mod fake_graph;
mod flows;
mod harness;
mod pipeline;
mod process;
mod proxy;
mod retries;
mod steps_misc;
