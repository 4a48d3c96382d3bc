//! `receipts dev` and `receipts simulate` together, the way a newcomer first runs them; the
//! shipped contracts (`docs/asyncapi.yaml`) and deployment files checked against the code.

mod bench;
mod compose;
mod contracts;
mod dashboards;
mod dev;
mod ops;
mod signing_secrets;
mod support;
mod tenants;
mod wire;
mod yaml;
