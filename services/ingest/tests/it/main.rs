//! The ingest gateway's tests: the fuzz corpus through the parsers.

mod corpus;
