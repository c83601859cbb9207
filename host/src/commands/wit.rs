//! `host wit`: the WIT contract this host speaks, embedded in the binary:
//! `wit/netplug.wit` (package `netplug:protocol`), and with `--all` the
//! packages it depends on (`wit/deps/`), so a guest can be written against
//! exactly what a given host build links.

use crate::config::flags::WitCommand;
use anyhow::Result;

/// `wit/netplug.wit`.
pub const NETPLUG: &str = include_str!("../../../wit/netplug.wit");

/// Every file under `wit/deps/`, by its path under `wit/`.
pub const DEPS: &[(&str, &str)] = &[
    ("deps/wasi-config/store.wit", include_str!("../../../wit/deps/wasi-config/store.wit")),
    ("deps/wasi-keyvalue-draft2/atomic.wit", include_str!("../../../wit/deps/wasi-keyvalue-draft2/atomic.wit")),
    ("deps/wasi-keyvalue-draft2/batch.wit", include_str!("../../../wit/deps/wasi-keyvalue-draft2/batch.wit")),
    ("deps/wasi-keyvalue-draft2/store.wit", include_str!("../../../wit/deps/wasi-keyvalue-draft2/store.wit")),
    ("deps/wasi-keyvalue-draft2/watch.wit", include_str!("../../../wit/deps/wasi-keyvalue-draft2/watch.wit")),
    ("deps/wasi-keyvalue-draft2/world.wit", include_str!("../../../wit/deps/wasi-keyvalue-draft2/world.wit")),
    ("deps/wasi-keyvalue/atomic.wit", include_str!("../../../wit/deps/wasi-keyvalue/atomic.wit")),
    ("deps/wasi-keyvalue/batch.wit", include_str!("../../../wit/deps/wasi-keyvalue/batch.wit")),
    ("deps/wasi-keyvalue/store.wit", include_str!("../../../wit/deps/wasi-keyvalue/store.wit")),
    ("deps/wasi-keyvalue/watch.wit", include_str!("../../../wit/deps/wasi-keyvalue/watch.wit")),
    ("deps/wasi-keyvalue/world.wit", include_str!("../../../wit/deps/wasi-keyvalue/world.wit")),
];

/// The text `host wit` prints: `netplug.wit` as it is, or with `all` every
/// file, each after a `// FILE` comment line naming its path under `wit/`.
pub fn text(all: bool) -> String {
    if !all {
        return NETPLUG.to_string();
    }
    let mut out = String::new();
    for (name, body) in std::iter::once(("netplug.wit", NETPLUG)).chain(DEPS.iter().copied()) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("// wit/{name}\n"));
        out.push_str(body);
        if !body.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

pub fn run(cmd: &WitCommand) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`host wit | head`) is not an error worth a message.
    match stdout.write_all(text(cmd.all).as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn files(dir: &Path, under: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, under, out);
            } else {
                out.push(path.strip_prefix(under).unwrap().to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn every_file_of_wit_is_embedded() {
        let wit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk = Vec::new();
        files(&wit.join("deps"), &wit, &mut on_disk);
        on_disk.sort();
        let embedded: Vec<String> = DEPS.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(embedded, on_disk, "add the new file under wit/deps to DEPS");
        assert!(NETPLUG.contains("package netplug:protocol@"));
    }

    #[test]
    fn all_names_each_file_once() {
        assert_eq!(text(false), NETPLUG);
        let all = text(true);
        assert!(all.starts_with("// wit/netplug.wit\n"));
        assert_eq!(all.matches("\n// wit/deps/").count(), DEPS.len());
        assert!(all.contains("package wasi:keyvalue@0.2.0-draft;"));
        assert!(all.contains("package wasi:keyvalue@0.2.0-draft2;"));
    }
}
