//! `host inspect`: what a guest is and what the host would grant it.

use crate::{engine, guest};
use anyhow::Result;
use std::path::Path;

pub fn run(path: &Path) -> Result<()> {
    let engine = engine::for_inspection()?;
    let component = guest::load(&engine, path, None)?;
    let ty = component.component_type();
    let world = guest::world_of(&engine, &component, path);
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
    let mut needs_kv = false;
    for (name, _) in ty.imports(&engine) {
        match guest::grant(name, &[]) {
            Ok(()) => println!("  {name}: granted"),
            Err(why) if why == guest::NEEDS_KV => {
                needs_kv = true;
                println!("  {name}: needs --kv ({why})");
            }
            Err(why) => {
                refused += 1;
                println!("  {name}: REFUSED ({why})");
            }
        }
    }
    let verdict = match (&world, refused) {
        (Ok(_), 0) if needs_kv => "the host would run this guest with --kv memory or --kv PATH",
        (Ok(_), 0) => "the host would run this guest",
        _ => "the host would refuse this guest",
    };
    println!("verdict: {verdict}");
    Ok(())
}
