//! Planning a reload of `host serve`'s file: read it again, check all of
//! it (every key, every guest), and work out what changes for each
//! listener. Nothing is applied here (`supervisor.rs` does that), so a file
//! that does not check changes nothing.

use crate::config::file::ServeFile;
use crate::config::serve::ListenerSettings;
use crate::guest::load::Admitted;
use crate::runtime::prepare::{prepare, Prepared, Shared};
use crate::runtime::reload::Loader;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What one reload does to one listener.
pub(crate) enum Change {
    Add(Prepared),
    Replace(Prepared),
    Regenerate(String, Admitted),
    Remove(String),
}

/// A reload's changes, all checked.
pub(crate) struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: usize,
    /// The file's `shutdown-timeout` and `instances`, which apply only at
    /// the next start.
    pub grace: Duration,
    pub instances: Option<u32>,
}

/// The running listeners, by name: their settings and their loaders.
pub(crate) type Running = BTreeMap<String, (ListenerSettings, Arc<Loader>)>;

/// Reads the file at `path` again and works out, checking everything, what
/// changes for the `running` listeners.
pub(crate) fn plan(shared: &Shared, path: &Path, running: &Running) -> Result<Plan> {
    let file = ServeFile::read(path)?;
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for listener in &file.listeners {
        let known = running.get(&listener.name);
        let loader = known.map(|(_, loader)| loader.as_ref());
        let was = known.map(|(settings, _)| settings);
        match decide(&listener.settings, was, || loader.is_some_and(Loader::unchanged)) {
            Decision::Add => changes.push(Change::Add(prepare(shared, listener.clone(), None)?)),
            Decision::Replace => changes.push(Change::Replace(prepare(shared, listener.clone(), loader)?)),
            Decision::Regenerate => {
                let loader = loader.expect("a known listener");
                let admitted = loader.admit().map_err(|e| listener.origin.guest_error(&listener.name, &e))?;
                changes.push(Change::Regenerate(listener.name.clone(), admitted));
            }
            Decision::Keep => unchanged += 1,
        }
    }
    let wanted: Vec<&str> = file.listeners.iter().map(|l| l.name.as_str()).collect();
    changes.extend(removed(running.keys(), &wanted).into_iter().map(Change::Remove));
    Ok(Plan { changes, unchanged, grace: file.shutdown_timeout, instances: file.instances })
}

/// What a reload does to a listener the file names.
#[derive(Debug, PartialEq)]
enum Decision {
    /// New in the file: started.
    Add,
    /// Its settings changed: replaced by one accepting on the same socket.
    Replace,
    /// Only its guest file changed: a new generation.
    Regenerate,
    /// Nothing changed: left alone.
    Keep,
}

/// The decision for a listener the file gives `wanted` settings, that runs
/// with `running` ones (`None`: not running); `guest_unchanged` reads its
/// guest file, asked only when the settings are the same.
fn decide<S: PartialEq>(wanted: &S, running: Option<&S>, guest_unchanged: impl FnOnce() -> bool) -> Decision {
    match running {
        None => Decision::Add,
        Some(running) if running != wanted => Decision::Replace,
        Some(_) if !guest_unchanged() => Decision::Regenerate,
        Some(_) => Decision::Keep,
    }
}

/// The running listeners the file no longer names: removed.
fn removed<'a>(running: impl Iterator<Item = &'a String>, wanted: &[&str]) -> Vec<String> {
    running.filter(|name| !wanted.contains(&name.as_str())).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_is_added_replaced_regenerated_kept_or_removed() {
        let never = || panic!("the guest file is read only when the settings are the same");
        assert_eq!(decide(&1, None, never), Decision::Add);
        assert_eq!(decide(&1, Some(&2), never), Decision::Replace);
        assert_eq!(decide(&1, Some(&1), || false), Decision::Regenerate);
        assert_eq!(decide(&1, Some(&1), || true), Decision::Keep);
        let running = ["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(removed(running.iter(), &["b", "d"]), ["a", "c"]);
        assert!(removed(running.iter(), &["a", "b", "c"]).is_empty());
    }
}
