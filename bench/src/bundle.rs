//! Row 12: the seed exchange against `host bundle`'s hello on the stock
//! wasmtime CLI (docs/portability.md), beside `host run hello.wasm`, in
//! the same interleaved run. The bundle stands in the host+guest column
//! and `host run` in the native one: the ratio is what a stock runtime
//! costs against the host. The bundle serves one connection at a time, so
//! above 1 concurrent the clients queue; it has no graceful stop either
//! (SIGTERM ends it), which the runner does not note as an unclean exit.
//! Without the wasmtime CLI
//! (target/tools/bin/wasmtime, installed by .ci/run) the row says so.

use crate::report::Row;
use crate::runner::Runner;
use crate::server::Kind;
use std::path::PathBuf;
use std::process::Command;

pub fn rows(runner: &mut Runner) -> Vec<Row> {
    let name = |conns: usize| {
        format!("12. seed exchange, {conns} concurrent: bundled hello.wasm on stock wasmtime (native column: host run)")
    };
    let skipped = |why: &'static str| {
        [1usize, 8]
            .into_iter()
            .map(|conns| {
                let mut row = Row::new(&name(conns), "exch/s", true);
                row.na = Some(why);
                row
            })
            .collect()
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasmtime = root.join("target/tools/bin/wasmtime");
    if !wasmtime.exists() {
        runner.notes.push(format!("bundle rows skipped: {} is missing (.ci/run installs it)", wasmtime.display()));
        return skipped("skipped: no wasmtime CLI in target/tools/bin (.ci/run installs it)");
    }
    let app = runner.paths.logs.join("hello.app.wasm");
    let bundled = Command::new(&runner.paths.host)
        .arg("bundle")
        .arg(runner.paths.guests.join("hello.wasm"))
        .arg("-o")
        .arg(&app)
        .output();
    match bundled {
        Ok(out) if out.status.success() => {}
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            runner.notes.push(format!("bundle rows skipped: host bundle failed: {why}"));
            return skipped("skipped: host bundle failed (see the notes)");
        }
    }
    let variants = [Kind::Stock { wasmtime, app }, Kind::host("hello.wasm", vec![])];
    let mut rows = Vec::new();
    for conns in [1usize, 8] {
        eprintln!("» seed exchange, {conns} concurrent, bundled on stock wasmtime");
        let load = runner.seed_load(conns);
        let mut samples = [Vec::new(), Vec::new()];
        for rep in runner.interleave_reps(&load, &variants) {
            for (i, sample) in rep.into_iter().enumerate() {
                samples[i].extend(sample);
            }
        }
        let mut row = Row::new(&name(conns), "exch/s", true);
        row.host = load.metric.stat(&samples[0]);
        row.native = load.metric.stat(&samples[1]);
        row.cpu_unit = "µs/exch";
        rows.push(row);
    }
    rows
}
