//! Precompiled guests (`.cwasm`): the file `host compile` writes, and its
//! loading by `host run` and `host inspect` in place of compiling.
//!
//! The file is wasmtime's serialized component (an ELF object, as `wasmtime
//! compile` writes) followed by a trailer that `host compile` appends: the
//! SHA-256 of the object, its length and a magic string, 48 bytes in all.
//! wasmtime checks only the object's header (its version and engine
//! configuration) and trusts the rest: a truncated or corrupted object could
//! be misread, or run damaged machine code. The trailer lets the host refuse
//! such a file before wasmtime sees it. It is a check against accidents, not
//! against tampering: whoever can write the file can write a matching
//! trailer, and controls the host anyway (see `load`).

use anyhow::{anyhow, bail, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

/// The last bytes of every file `host compile` writes; the digit is the
/// trailer's format.
const MAGIC: &[u8; 8] = b"netplug1";
/// SHA-256, length (u64, little-endian), magic.
const TRAILER: usize = 32 + 8 + MAGIC.len();

/// Whether `bytes` are meant as a precompiled guest rather than a `.wasm`:
/// what wasmtime recognises as its precompiled artifact, or any ELF file,
/// since a truncated artifact is no longer recognised and deserves to be
/// called damaged rather than "not WebAssembly".
pub fn is_precompiled(bytes: &[u8]) -> bool {
    Engine::detect_precompiled(bytes).is_some() || bytes.starts_with(b"\x7fELF")
}

/// The file `host compile` writes for a serialized component: the object,
/// then the trailer.
pub fn seal(object: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(object.len() + TRAILER);
    file.extend_from_slice(object);
    file.extend_from_slice(&Sha256::digest(object));
    file.extend_from_slice(&(object.len() as u64).to_le_bytes());
    file.extend_from_slice(MAGIC);
    file
}

/// The object in a file `seal` wrote, or what is wrong with the file.
fn unseal(file: &[u8]) -> Result<&[u8], String> {
    let Some(body) = file.len().checked_sub(TRAILER) else {
        return Err(format!("is too short ({} bytes) to be a precompiled guest", file.len()));
    };
    let (object, trailer) = file.split_at(body);
    let (digest, rest) = trailer.split_at(32);
    let (length, magic) = rest.split_at(8);
    if magic != MAGIC {
        return Err("does not end with the checksum `host compile` writes: it is truncated, or was not written by \
                    `host compile`"
            .to_string());
    }
    let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    if length != object.len() as u64 {
        return Err(format!(
            "is truncated or damaged: it holds {} bytes of compiled code where `host compile` wrote {length}",
            object.len()
        ));
    }
    if Sha256::digest(object).as_slice() != digest {
        return Err("is damaged: its compiled code does not match the checksum `host compile` wrote".to_string());
    }
    Ok(object)
}

/// Loads a precompiled guest, refusing in one line naming the file one that
/// is damaged, not a component, or made for another host.
pub fn load(engine: &Engine, path: &Path, file: &[u8]) -> Result<Component> {
    let shown = path.display();
    if matches!(Engine::detect_precompiled(file), Some(Precompiled::Module)) {
        bail!(
            "{shown} is a precompiled core WebAssembly module, not a component: precompile the guest component \
             (built for wasm32-wasip2) with `host compile`"
        );
    }
    let object = unseal(file).map_err(|why| anyhow!("{shown} {why}; compile the guest again with `host compile`"))?;
    if !matches!(Engine::detect_precompiled(object), Some(Precompiled::Component)) {
        bail!("{shown} is not a precompiled wasmtime component; compile the guest again with `host compile`");
    }
    // SAFETY: `object` is native code that wasmtime maps and runs in this
    // process, outside the sandbox, trusting everything past the header it
    // checks. That is acceptable here for two reasons. The operator named
    // this file on the command line and so trusts it as they trust the host
    // binary itself, whose code it becomes (the README says so, as wasmtime's
    // `--allow-precompiled` does); the host never loads a `.cwasm` it was not
    // told to. And the checksum just verified shows the bytes are, unchanged,
    // what `Component::serialize` produced in `host compile`: wasmtime
    // promises that the unmodified output of any of its versions is either
    // loaded or refused with an error by the version and configuration check
    // in its header, never misread. The bytes were read into memory once and
    // checked there, so the file changing now cannot slip past the checksum.
    let loaded = unsafe { Component::deserialize(engine, object) };
    loaded.map_err(|e| {
        let reason = format!("{e:#}").replace('\n', " ");
        // wasmtime refuses a precompiled component for one of two reasons:
        // its header names another wasmtime version or configuration, or
        // the component does not fit this engine's instance pool (a memory
        // larger than --max-memory), as a `.wasm` would not. Only the first
        // calls for compiling again, and an engine with the same code
        // settings but no pool tells them apart.
        let fits_another_pool = crate::guest::engine::for_inspection().is_ok_and(|plain| {
            // SAFETY: the same verified bytes as above, for the same reasons.
            unsafe { Component::deserialize(&plain, object) }.is_ok()
        });
        if fits_another_pool {
            anyhow!("cannot load guest {shown}: {reason}")
        } else {
            anyhow!(
                "{shown} was precompiled for another host ({reason}); compile it again with this host's `host compile`"
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_object_unseals_to_itself() {
        let object = b"\x7fELF and some code".to_vec();
        let file = seal(&object);
        assert_eq!(file.len(), object.len() + TRAILER);
        assert_eq!(unseal(&file).unwrap(), &object[..]);
    }

    #[test]
    fn damage_is_found() {
        let file = seal(&[7u8; 1000]);
        let truncated = &file[..file.len() / 2];
        assert!(unseal(truncated).unwrap_err().contains("truncated"));
        assert!(unseal(&file[..10]).unwrap_err().contains("too short"));
        let mut flipped = file.clone();
        flipped[500] ^= 0xff;
        assert!(unseal(&flipped).unwrap_err().contains("damaged"));
        // A trailer moved by bytes cut from the middle.
        let cut = [&file[..400], &file[401..]].concat();
        assert!(unseal(&cut).unwrap_err().contains("999 bytes"));
    }

    #[test]
    fn a_component_loads_and_a_core_module_is_refused() {
        let engine = crate::guest::engine::for_inspection().unwrap();
        // The smallest component and core module: they compile in microseconds.
        let object = engine.precompile_component(b"\0asm\x0d\0\x01\0").unwrap();
        let file = seal(&object);
        // The trailer does not hide the ELF object from wasmtime's detection.
        assert_eq!(Engine::detect_precompiled(&file), Some(Precompiled::Component));
        assert!(is_precompiled(&file));
        load(&engine, Path::new("empty.cwasm"), &file).unwrap();
        let module = seal(&engine.precompile_module(b"\0asm\x01\0\0\0").unwrap());
        let err = load(&engine, Path::new("core.cwasm"), &module).unwrap_err().to_string();
        assert!(err.contains("core.cwasm is a precompiled core WebAssembly module"), "{err}");
        // wasmtime's own output, without the trailer, is not taken.
        let err = load(&engine, Path::new("bare.cwasm"), &object).unwrap_err().to_string();
        assert!(err.contains("not written by `host compile`"), "{err}");
    }
}
