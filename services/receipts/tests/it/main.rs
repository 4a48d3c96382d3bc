//! `receipts dev` and `receipts simulate` together, the way a newcomer first runs them.

mod compose;
mod dev;
