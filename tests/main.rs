//! The end-to-end tests: the real `host` binary (CARGO_BIN_EXE_host), run
//! as a process of its own and reached over loopback by real clients: the
//! tests' own sockets, nc, curl, the Python clients in tests/clients,
//! redis-cli, redis-benchmark and a real redis-server to compare with,
//! haproxy in front of several hosts, kubernetes-validate on the manifests.
//! The hosts serve the guests of guest/ and the test guests in tests/guests
//! (members of the guests' workspace, built with them by `make build`).
//!
//! One test binary, `end_to_end` of the host package (see host/Cargo.toml),
//! with a module per area and `support` for the helpers they share; the
//! modules' tests run in parallel in one process, so each names its scratch
//! directories after itself. `.ci/run` installs the tools they need.

mod support;

mod admin;
mod bad_input;
mod bundle;
mod cache;
mod closed_stdout;
mod config;
mod container;
mod deploy;
mod docs;
mod echo;
mod fleet;
mod http;
mod json_logs;
mod keyvalue;
mod kv_redis;
mod layers;
mod locked_down;
mod overload;
mod pool;
mod precompiled;
mod proxy;
mod records;
mod resp;
mod sandbox;
mod seed;
mod serve;
mod shutdown;
mod swap;
mod template;
