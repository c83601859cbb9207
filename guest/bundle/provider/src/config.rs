//! `wasi:config/store` from the environment the runtime gives the
//! component: the key `upstream` is the environment variable `upstream`
//! (`wasmtime run --env upstream=127.0.0.1:6379`). A stock runtime passes
//! only the variables it is told to, so these are the operator's choice,
//! as `host run --config` pairs are.

use crate::exports::wasi::config::store::{Error, Guest};
use crate::Provider;

impl Guest for Provider {
    fn get(key: String) -> Result<Option<String>, Error> {
        match std::env::var(&key) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::Io(format!("the value of `{key}` is not UTF-8"))),
        }
    }

    fn get_all() -> Result<Vec<(String, String)>, Error> {
        Ok(std::env::vars().collect())
    }
}
