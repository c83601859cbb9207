//! `host inspect`: what a guest is and what the host would grant it.

use crate::limits::Limits;
use crate::runtime;
use anyhow::Result;
use std::path::Path;
use std::time::Duration;

pub fn run(path: &Path) -> Result<()> {
    // A small pool: inspecting instantiates nothing.
    let limits = Limits {
        max_connections: 1,
        max_memory: 16 << 20,
        cpu_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        max_lifetime: None,
        max_bytes_in: None,
        max_bytes_out: None,
        max_resources: 1,
        max_log_lines: 0,
        max_log_bytes: 0,
        connections_per_instance: 1,
    };
    let engine = runtime::build_engine(&limits)?;
    let component = runtime::load_component(&engine, path, None)?;
    let ty = component.component_type();
    let world = runtime::world_of(&engine, &component, path);
    println!("guest: {}", path.display());
    match &world {
        Ok(w) => println!("world: {}", w.name()),
        Err(e) => println!("world: none ({e:#})"),
    }
    println!("exports:");
    for (name, _) in ty.exports(&engine) {
        println!("  {name}");
    }
    println!("imports:");
    let mut refused = 0;
    for (name, _) in ty.imports(&engine) {
        match runtime::grant(name, &[]) {
            Ok(()) => println!("  {name}: granted"),
            Err(why) => {
                refused += 1;
                println!("  {name}: REFUSED ({why})");
            }
        }
    }
    let verdict = match (&world, refused) {
        (Ok(_), 0) => "the host would run this guest",
        _ => "the host would refuse this guest",
    };
    println!("verdict: {verdict}");
    Ok(())
}
