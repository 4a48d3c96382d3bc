//! `receipts dev` and `receipts simulate` together, the way a newcomer first runs them.

mod bench;
mod compose;
mod dev;
mod tenants;
