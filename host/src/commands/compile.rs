//! `host compile`: admit a guest as `host run` would, compile it with the
//! settings `host run` compiles with, and write the machine code to a
//! `.cwasm` that `host run` and `host inspect` load without compiling (the
//! file's format is in `guest/precompiled.rs`).

use crate::config::flags::CompileCommand;
use crate::guest::engine;
use crate::guest::load;
use crate::guest::precompiled;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

pub fn run(cmd: &CompileCommand) -> Result<()> {
    // The engine of `host inspect`: the same compiled-code settings as
    // `host run`'s (`engine::base_config`), without an instance pool, whose
    // size decides nothing about the code and which wasmtime's compatibility
    // check does not look at.
    let engine = engine::for_inspection()?;
    let load::Admitted { component, world, .. } =
        load::admit(&engine, &cmd.guest, None, &cmd.grant, load::KvGrant::Compile)?;
    let object = component
        .serialize()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot serialize the compiled guest {}", cmd.guest.display()))?;
    let file = precompiled::seal(&object);
    let output = cmd.output.clone().unwrap_or_else(|| cmd.guest.with_extension("cwasm"));
    if output.is_dir() {
        bail!("cannot write {}: it is a directory; give -o the file to write", output.display());
    }
    write_atomically(&output, &file)?;
    println!(
        "wrote {} ({} bytes): {}, a {} guest, precompiled for this host",
        output.display(),
        file.len(),
        cmd.guest.display(),
        world.name()
    );
    Ok(())
}

/// Writes `bytes` to a new file beside `path` and renames it over `path`,
/// so that a host starting meanwhile sees the old file or the new one,
/// never half of one, and an interrupted compile leaves no damaged `.cwasm`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = path.display();
    let name = path.file_name().with_context(|| format!("cannot write {shown}: it names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("cannot write {shown}: cannot create {}", tmp.display()))?;
    // On disk before the rename, so that a crash cannot leave the new name on
    // a file whose contents never made it.
    let written = file.write_all(bytes).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write {shown}"))
}
