//! The webhook client against local HTTP receivers on 127.0.0.1:0.

mod client;
mod guard;
