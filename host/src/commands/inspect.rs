//! `host inspect`: what a guest is and what the host would grant it.

use crate::guest::engine;
use crate::guest::load;
use anyhow::Result;
use std::path::Path;

pub fn run(path: &Path) -> Result<()> {
    let engine = engine::for_inspection()?;
    let component = load::load(&engine, path, None)?;
    let ty = component.component_type();
    let world = load::world_of(&engine, &component, path);
    println!("guest: {}", path.display());
    let mismatch = load::protocol_mismatch(&engine, &component);
    if let Some(why) = &mismatch {
        println!("warning: {why}");
    }
    let imports: Vec<String> = ty.imports(&engine).map(|(name, _)| name.to_string()).collect();
    match &world {
        Ok(w) => println!("world: {}", wit_world(*w, &imports)),
        Err(e) => println!("world: none ({e:#})"),
    }
    println!("exports:");
    for (name, _) in ty.exports(&engine) {
        println!("  {name}");
    }
    println!("imports:");
    let mut refused = 0;
    let mut needs_kv = false;
    for name in &imports {
        match load::grant(name, &[]) {
            Ok(()) => println!("  {name}: granted"),
            Err(why) if why == load::NEEDS_KV => {
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
        _ if mismatch.is_some() => "the host would refuse this guest",
        (Ok(_), 0) if needs_kv => "the host would run this guest with --kv (memory, a redis:// URL or a database path)",
        (Ok(_), 0) => "the host would run this guest",
        _ => "the host would refuse this guest",
    };
    println!("verdict: {verdict}");
    Ok(())
}

/// The world of `wit/netplug.wit` a guest of `world` was built against,
/// told by its imports: a server that imports the key-value store needs
/// `server-with-kv` (and the host's `--kv`), one that reads its
/// configuration `server-with-config`.
fn wit_world(world: load::World, imports: &[String]) -> &'static str {
    let imports_any = |prefixes: &[&str]| imports.iter().any(|name| prefixes.iter().any(|p| name.starts_with(p)));
    match world {
        load::World::Client => "client",
        load::World::Server if imports_any(&["wasi:keyvalue/", "netplug:protocol/expiry"]) => "server-with-kv",
        load::World::Server if imports_any(&["wasi:config/"]) => "server-with-config",
        load::World::Server => "server",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_world_follows_the_imports() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let server = load::World::Server;
        assert_eq!(wit_world(server, &names(&["netplug:protocol/log@0.1.0"])), "server");
        assert_eq!(wit_world(server, &names(&["wasi:config/store@0.2.0-rc.1"])), "server-with-config");
        let kv = names(&["wasi:config/store@0.2.0-rc.1", "wasi:keyvalue/store@0.2.0-draft2"]);
        assert_eq!(wit_world(server, &kv), "server-with-kv");
        assert_eq!(wit_world(load::World::Client, &kv), "client");
    }
}
