//! `host bundle`'s composition: a server guest, unchanged, wired to this
//! repository's adapter (`guest/bundle/`, embedded by build.rs) so that one
//! component runs it on a stock runtime. Instantiation is acyclic, hence
//! two adapter parts: the provider exports what the guest imports
//! (`netplug:protocol` `types`, `log`, `dialer`, `wasi:config/store`) and
//! the listener; the guest exports `handler`; the driver imports the
//! listener and the handler and exports `wasi:cli/run`. Whatever else any of
//! the three imports (standard WASI) becomes an import of the bundle, for
//! the runtime to provide. See docs/portability.md.

use super::load::{HANDLER_EXPORT, RUN_EXPORT};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, NodeId, PackageId};

/// The provider part, as the guests' workspace built it (empty when it was
/// not built before the host: see build.rs).
const PROVIDER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bundle_provider.wasm"));
/// The driver part, likewise.
const DRIVER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bundle_driver.wasm"));

/// The WASI packages a stock runtime provides: a guest's imports from them
/// pass through to the bundle's imports.
const STANDARD: [&str; 6] =
    ["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:sockets/", "wasi:filesystem/"];

/// A bundled component.
pub struct Bundled {
    pub bytes: Vec<u8>,
    /// The WASI packages it imports (`wasi:io@0.2.6`), sorted.
    pub packages: Vec<String>,
}

/// The bundled component: `bytes` (read from `path`, named in errors)
/// composed with the adapter. Every refusal is one line.
pub fn compose(path: &Path, bytes: &[u8]) -> Result<Bundled> {
    let shown = path.display();
    if PROVIDER.is_empty() || DRIVER.is_empty() {
        bail!(
            "this host was built without the bundle adapter (guest/bundle/, built by `make guests`): \
             run `make build`, which builds the guests before the host"
        );
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("{shown} is not a WebAssembly file (it does not start with the \\0asm magic bytes)");
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!("{shown} is a core WebAssembly module, not a component: build the guest for wasm32-wasip2");
    }
    let mut graph = CompositionGraph::new();
    let guest =
        register(&mut graph, "netplug:guest", bytes).with_context(|| format!("{shown} is not a valid component"))?;
    let provider = register(&mut graph, "netplug:bundle-provider", PROVIDER).context("the embedded bundle provider")?;
    let driver = register(&mut graph, "netplug:bundle-driver", DRIVER).context("the embedded bundle driver")?;

    let exports = names(&graph, guest, false);
    if !exports.iter().any(|e| e == HANDLER_EXPORT) {
        if exports.iter().any(|e| e == RUN_EXPORT) {
            bail!("{shown} is a client guest (it exports `{RUN_EXPORT}`): only a server guest, exporting `{HANDLER_EXPORT}`, can be bundled");
        }
        bail!("{shown} is not a netplug server guest: it exports [{}], not `{HANDLER_EXPORT}`", exports.join(", "));
    }
    let provided = names(&graph, provider, false);
    let missing: Vec<String> = names(&graph, guest, true)
        .into_iter()
        .filter(|import| !provided.contains(import) && !STANDARD.iter().any(|p| import.starts_with(p)))
        .collect();
    if !missing.is_empty() {
        bail!(
            "cannot bundle {shown}: it imports {}, which a stock runtime does not provide and the bundle adapter \
             does not implement (only `host run` serves it)",
            missing.join(", ")
        );
    }

    let p = graph.instantiate(provider);
    let g = graph.instantiate(guest);
    let d = graph.instantiate(driver);
    let (guest_imports, driver_imports) = (names(&graph, guest, true), names(&graph, driver, true));
    plug(&mut graph, g, &guest_imports, &provided, p, None)?;
    plug(&mut graph, d, &driver_imports, &provided, p, Some(g))?;
    let run = names(&graph, driver, false)
        .into_iter()
        .find(|e| e.starts_with("wasi:cli/run@"))
        .context("the embedded bundle driver exports no wasi:cli/run")?;
    let export = graph.alias_instance_export(d, &run).map_err(|e| anyhow!("{e}"))?;
    graph.export(export, &run).map_err(|e| anyhow!("{e}"))?;
    let bytes = graph
        .encode(EncodeOptions::default())
        .map_err(|e| anyhow!("{e:#}"))
        .with_context(|| format!("cannot compose {shown} with the bundle adapter"))?;
    let packages = standard_packages(&bytes)?;
    Ok(Bundled { bytes, packages })
}

/// The packages the bundle imports, each checked to be standard WASI: the
/// promise of a bundle, kept by the check of the guest's imports above.
fn standard_packages(bundle: &[u8]) -> Result<Vec<String>> {
    let mut graph = CompositionGraph::new();
    let package = register(&mut graph, "netplug:bundle", bundle).context("the bundle does not read back")?;
    let mut packages = std::collections::BTreeSet::new();
    for import in names(&graph, package, true) {
        if !STANDARD.iter().any(|p| import.starts_with(p)) {
            bail!("the bundle would import `{import}`, which is not standard WASI");
        }
        // `wasi:io/streams@0.2.6` is of the package `wasi:io@0.2.6`.
        let (interface, version) = import.split_once('@').unwrap_or((&import, ""));
        let package = interface.split_once('/').map_or(interface, |(package, _)| package);
        packages.insert(format!("{package}@{version}"));
    }
    Ok(packages.into_iter().collect())
}

fn register(graph: &mut CompositionGraph, name: &str, bytes: &[u8]) -> Result<PackageId> {
    let package = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut()).map_err(|e| anyhow!("{e:#}"))?;
    graph.register_package(package).map_err(|e| anyhow!("{e:#}"))
}

/// The import (or export) names of a registered component.
fn names(graph: &CompositionGraph, package: PackageId, imports: bool) -> Vec<String> {
    let world = &graph.types()[graph[package].ty()];
    let items = if imports { &world.imports } else { &world.exports };
    items.keys().cloned().collect()
}

/// Sets each of `instance`'s imports the provider exports from `provider`,
/// and its `handler` import from `handler`; the rest it leaves unset, for
/// the bundle to import.
fn plug(
    graph: &mut CompositionGraph,
    instance: NodeId,
    imports: &[String],
    provided: &[String],
    provider: NodeId,
    handler: Option<NodeId>,
) -> Result<()> {
    for import in imports {
        let source = match handler {
            _ if provided.contains(import) => provider,
            Some(handler) if import == HANDLER_EXPORT => handler,
            _ => continue,
        };
        let export = graph.alias_instance_export(source, import).map_err(|e| anyhow!("{e:#}"))?;
        graph
            .set_instantiation_argument(instance, import, export)
            .map_err(|e| anyhow!("{e:#}"))
            .with_context(|| format!("cannot connect `{import}`"))?;
    }
    Ok(())
}
