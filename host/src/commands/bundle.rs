//! `host bundle`: a server guest composed with the stock-runtime adapter
//! (`guest/bundle.rs`) into one component, written whole or not at all.

use super::compile::write_atomically;
use crate::config::flags::BundleCommand;
use crate::guest::bundle;
use anyhow::{bail, Context, Result};

pub fn run(cmd: &BundleCommand) -> Result<()> {
    if cmd.output.is_dir() {
        bail!("cannot write {}: it is a directory; give -o the file to write", cmd.output.display());
    }
    let bytes = std::fs::read(&cmd.guest).with_context(|| format!("cannot read {}", cmd.guest.display()))?;
    let app = bundle::compose(&cmd.guest, &bytes)?;
    write_atomically(&cmd.output, &app.bytes)?;
    println!(
        "wrote {} ({} bytes): {} with the netplug adapter, importing {}",
        cmd.output.display(),
        app.bytes.len(),
        cmd.guest.display(),
        app.packages.join(", ")
    );
    Ok(())
}
