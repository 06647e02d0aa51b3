//! Integration tests: the real `ihp-infra` binary in temp dirs, against an
//! AWS emulator (a moto server each test starts and stops, or LocalStack:
//! see common.rs). One test crate, so the SDK is linked once.

mod adopt;
mod backups;
mod bad_input;
mod bench;
mod commands;
mod common;
mod domain;
mod fidelity;
mod handover;
mod mail;
mod network;
mod options;
mod parts;
mod proxy;
mod requests;
mod safety;
mod server;
mod storage;
mod ui;
mod validate;
