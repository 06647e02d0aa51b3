//! Integration tests: the real `ihp-infra` binary in temp dirs, against a
//! moto server each test starts and stops. One test crate, so the SDK is
//! linked once.

mod bad_input;
mod bench;
mod common;
mod network;
mod proxy;
mod safety;
mod server;
mod storage;
mod ui;
mod validate;
