//! `host serve`'s configuration file: named listeners, each with its guest,
//! address, limits and guest configuration, and the `[defaults]` limits they
//! inherit. The whole file is checked before anything is bound, and each
//! error is one line naming the file, the line and the key:
//!
//! ```text
//! netplug.toml:7: listeners.hello.limits.max-memory: `16MB` is ambiguous ...
//! ```
//!
//! Settings left unset take the values `host run` defaults to (its flags'
//! defaults, read from the command-line parser, so the two cannot differ),
//! and a listener's guest settings are built by the same function as `host
//! run`'s (`GuestSettings::from_args`).

use crate::config::flags::{
    parse_delay, parse_memory, KvArgs, LimitArgs, ListenArgs, LogFormat, OverloadArgs, ServeCommand, MAX_CONNECTIONS,
};
use crate::config::kv::Backend;
use crate::config::limits::MAX_INSTANCES;
use crate::config::serve::{
    cache_dir, GuestSettings, ListenerConfig, ListenerSettings, Origin, PoolSize, ServeConfig, Source,
};
use crate::config::units::{
    parse_duration, parse_optional_count, parse_optional_duration, parse_optional_size, parse_size,
};
use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The process-wide settings and the listeners of one reading of the file.
#[derive(Debug)]
pub struct ServeFile {
    pub path: PathBuf,
    /// How long connections may run after SIGINT or SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long to go on accepting after readiness turns false.
    pub shutdown_delay: Duration,
    /// Instance slots reserved for all listeners together, if the file sets
    /// them (`instances`); otherwise the caller sizes the pool.
    pub instances: Option<u32>,
    /// `log-format`, `access-log`: read before logging starts (`main.rs`).
    pub log_format: Option<LogFormat>,
    pub access_log: Option<bool>,
    /// `[admin] address`: where the admin endpoint listens, if anywhere.
    pub admin_address: Option<SocketAddr>,
    pub listeners: Vec<ListenerConfig>,
}

impl ServeFile {
    /// Reads and checks the file at `path`: syntax, keys, values, and the
    /// listeners as a whole (unique names and addresses). Guests are not
    /// loaded here (see `runtime/prepare.rs`).
    pub fn read(path: &Path) -> Result<ServeFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        ServeFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ServeFile> {
        let doc =
            Doc { path, text, dir: path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")) };
        let raw = doc.deserialize()?;
        if raw.listeners.is_empty() {
            bail!("{}: no listeners: add a [listeners.NAME] table with an address and a guest", path.display());
        }
        let mut listeners: Vec<ListenerConfig> = Vec::new();
        for (name, listener) in raw.listeners {
            let listener = doc.listener(name, listener, &raw.defaults)?;
            let addr = listener.settings.address;
            if let Some(other) = listeners.iter().find(|l| addr.port() != 0 && l.settings.address == addr) {
                let Origin::File { address_line, .. } = listener.origin else { unreachable!("read from a file") };
                bail!(
                    "{}:{address_line}: listeners.{}.address: {addr} is also the address of listener `{}`",
                    path.display(),
                    listener.name,
                    other.name
                );
            }
            listeners.push(listener);
        }
        let admin_address = match raw.admin.and_then(|a| a.address) {
            Some(address) => Some(crate::config::flags::parse_admin_addr(address.get_ref()).map_err(|e| {
                anyhow::anyhow!("{}:{}: admin.address: {e}", path.display(), line_of(text, address.span().start))
            })?),
            None => None,
        };
        let defaults = FlagDefaults::parse_from(["host"]).listen;
        Ok(ServeFile {
            log_format: raw.log_format,
            access_log: raw.access_log,
            admin_address,
            path: path.to_path_buf(),
            shutdown_timeout: raw.shutdown_timeout.map_or(defaults.shutdown_timeout, |d| d.0),
            shutdown_delay: raw.shutdown_delay.map_or(defaults.shutdown_delay, |d| d.0),
            instances: raw.instances.map(|n| n.0),
            listeners,
        })
    }
}

/// The file being read, for locating what is wrong in it.
struct Doc<'a> {
    path: &'a Path,
    text: &'a str,
    /// What relative paths in it are relative to.
    dir: &'a Path,
}

impl Doc<'_> {
    /// The file as written, or one line naming the line and key that is wrong.
    fn deserialize(&self) -> Result<RawFile> {
        let at = |span: Option<Range<usize>>| match span {
            Some(span) => format!("{}:{}", self.path.display(), self.line(span)),
            None => self.path.display().to_string(),
        };
        let de =
            toml::Deserializer::parse(self.text).map_err(|e| anyhow::anyhow!("{}: {}", at(e.span()), e.message()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            // A `Spanned` value shows in the path as a private field of its own.
            let key = e.path().to_string().replace(".$__serde_spanned_private_value", "");
            let e = e.into_inner();
            let key = if key == "." { String::new() } else { format!(" {key}:") };
            anyhow::anyhow!("{}:{key} {}", at(e.span()), e.message())
        })
    }

    fn line(&self, span: Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    /// One `[listeners.NAME]` table, checked, over the flags' defaults and
    /// the file's `[defaults]`.
    fn listener(&self, name: String, table: Spanned<RawListener>, defaults: &RawLimits) -> Result<ListenerConfig> {
        let path = self.path.display();
        let table_line = self.line(table.span());
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!(
                "{path}:{table_line}: listeners.{name}: a listener's name may hold only letters, digits, `-` and `_`"
            );
        }
        let listener = table.into_inner();
        let missing = |k: &str| anyhow::anyhow!("{path}:{table_line}: listeners.{name}: `{k}` is missing");
        let Some(address) = listener.address else { return Err(missing("address")) };
        let Some(guest) = listener.guest else { return Err(missing("guest")) };
        if let Some((key, _)) = listener.config.iter().find(|(key, _)| key.is_empty()) {
            bail!("{path}:{table_line}: listeners.{name}.config: a key is empty{key}");
        }
        let address_line = self.line(address.span());
        let addr: SocketAddr = address.get_ref().parse().map_err(|_| {
            anyhow::anyhow!(
                "{path}:{address_line}: listeners.{name}.address: `{}` is not IP:PORT (examples: \
                 127.0.0.1:12345, [::1]:8080, 0.0.0.0:0)",
                address.get_ref()
            )
        })?;
        let mut args = FlagDefaults::parse_from(["host"]);
        defaults.apply(&mut args);
        listener.limits.apply(&mut args);
        // A path is relative to the file, like the guest's.
        args.kv.kv = match listener.kv {
            None => None,
            Some(kv) => match Backend::parse(&kv) {
                Ok(Backend::Memory | Backend::Redis(_) | Backend::RedisCluster(_)) => Some(kv),
                Ok(Backend::Path(db)) => Some(self.dir.join(db).display().to_string()),
                Err(e) => bail!("{path}:{table_line}: listeners.{name}.kv: {e}"),
            },
        };
        let guest_settings = GuestSettings::from_args(
            self.dir.join(guest.get_ref()),
            listener.allow_connect,
            listener.grant.into_iter().map(|g| g.0).collect(),
            listener.config.into_iter().map(|(key, value)| (key, value.0)).collect(),
            &args.kv,
            &args.limits,
            &args.overload,
        )?;
        let settings = ListenerSettings {
            address: addr,
            backlog: listener.backlog.map_or(args.listen.backlog, |b| b.0),
            watch: listener.watch,
            drain_timeout: listener.drain_timeout.map(|d| d.0),
            guest: guest_settings,
        };
        let guest_line = self.line(guest.span());
        let origin = Origin::File { file: self.path.to_path_buf(), table_line, guest_line, address_line };
        Ok(ListenerConfig { name, settings, origin })
    }
}

impl ServeFile {
    /// What `host serve` serves: the file's listeners, with the flags that
    /// apply to the whole process. The pool holds every listener's slots,
    /// and by default as many again, for listeners a reload adds or
    /// replaces.
    pub fn into_config(self, cmd: &ServeCommand) -> Result<ServeConfig> {
        let needed: u32 = self.listeners.iter().map(|l| l.settings.guest.limits.slots_needed()).sum();
        let instances = match self.instances {
            Some(n) if n < needed => bail!(
                "{}: instances = {n} is fewer than the {needed} instance slots the listeners need \
                 (each needs its max-connections, its idle instances and 5 more)",
                self.path.display()
            ),
            Some(n) => n,
            None => needed.saturating_mul(2).min(MAX_INSTANCES).max(needed),
        };
        Ok(ServeConfig {
            source: Source::File(self.path),
            listeners: self.listeners,
            shutdown_timeout: self.shutdown_timeout,
            shutdown_delay: self.shutdown_delay,
            // A reload may raise a listener's `max-memory`: the slots take
            // linear memories up to 4 GiB (what a slot reserves anyway);
            // each listener's own limit is enforced in its stores.
            pool: PoolSize { instances, max_memory: 4 << 30 },
            admin_address: cmd.admin.admin_addr.or(self.admin_address),
            cache_dir: cache_dir(cmd.no_cache),
            verbose: cmd.log.verbose,
        })
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// `host run`'s listening, limit, overload and key-value flags with nothing
/// given: their defaults.
#[derive(Parser)]
struct FlagDefaults {
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    overload: OverloadArgs,
    #[command(flatten)]
    kv: KvArgs,
}

/// The file as written. Every table refuses keys it does not know, so a
/// misspelt key is an error rather than a silently ignored setting.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    shutdown_timeout: Option<Dur>,
    shutdown_delay: Option<Delay>,
    instances: Option<Count<1, MAX_INSTANCES>>,
    log_format: Option<LogFormat>,
    access_log: Option<bool>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    defaults: RawLimits,
    #[serde(default)]
    listeners: BTreeMap<String, Spanned<RawListener>>,
}

/// `[admin]`: the admin endpoint (`--admin-addr`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAdmin {
    address: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawListener {
    address: Option<Spanned<String>>,
    guest: Option<Spanned<String>>,
    #[serde(default)]
    watch: bool,
    drain_timeout: Option<Dur>,
    backlog: Option<Count<1, 65535>>,
    #[serde(default)]
    allow_connect: Vec<String>,
    #[serde(default)]
    grant: Vec<Grant>,
    /// `memory`, a Redis URL or a database path, as `--kv`.
    kv: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    config: BTreeMap<String, ConfigValue>,
}

/// The limits of `[defaults]` and `[listeners.NAME.limits]`: `host run`'s
/// limit and overload flags, under the same names.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    max_connections: Option<Count<1, MAX_CONNECTIONS>>,
    connections_per_instance: Option<Count<1, { u32::MAX }>>,
    max_memory: Option<Memory>,
    cpu_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    max_lifetime: Option<MaybeDur>,
    max_bytes_in: Option<MaybeSize>,
    max_bytes_out: Option<MaybeSize>,
    max_resources: Option<Count<1, { u32::MAX }>>,
    max_log_lines: Option<Count<0, { u32::MAX }>>,
    max_log_bytes: Option<Size>,
    overload_threshold: Option<Count<1, 100>>,
    overload_idle_timeout: Option<Dur>,
    kv_max_bytes: Option<Size>,
    kv_max_key_size: Option<Size>,
    kv_max_value_size: Option<Size>,
    kv_max_ops: Option<MaybeCount>,
}

impl RawLimits {
    /// Overrides the flags' values with those this table sets.
    fn apply(&self, args: &mut FlagDefaults) {
        let FlagDefaults { limits, overload, kv, .. } = args;
        macro_rules! set {
            ($($field:ident => $target:expr, $value:expr;)*) => {
                $(if let Some(v) = &self.$field { $target = $value(v); })*
            };
        }
        set! {
            max_connections => limits.max_connections, |v: &Count<1, MAX_CONNECTIONS>| v.0;
            connections_per_instance => limits.connections_per_instance, |v: &Count<1, { u32::MAX }>| v.0;
            max_memory => limits.max_memory, |v: &Memory| v.0;
            cpu_timeout => limits.cpu_timeout, |v: &Dur| v.0;
            idle_timeout => limits.idle_timeout, |v: &Dur| v.0;
            max_lifetime => limits.max_lifetime.0, |v: &MaybeDur| v.0;
            max_bytes_in => limits.max_bytes_in.0, |v: &MaybeSize| v.0;
            max_bytes_out => limits.max_bytes_out.0, |v: &MaybeSize| v.0;
            max_resources => limits.max_resources, |v: &Count<1, { u32::MAX }>| v.0;
            max_log_lines => limits.max_log_lines, |v: &Count<0, { u32::MAX }>| v.0;
            max_log_bytes => limits.max_log_bytes, |v: &Size| v.0;
            overload_threshold => overload.overload_threshold, |v: &Count<1, 100>| v.0 as u8;
            overload_idle_timeout => overload.overload_idle_timeout, |v: &Dur| v.0;
            kv_max_bytes => kv.kv_max_bytes, |v: &Size| v.0;
            kv_max_key_size => kv.kv_max_key_size, |v: &Size| v.0;
            kv_max_value_size => kv.kv_max_value_size, |v: &Size| v.0;
            kv_max_ops => kv.kv_max_ops.0, |v: &MaybeCount| v.0;
        }
    }
}

/// A value written as text and parsed by the same function as the flag of
/// the same name, so the file and the command line accept the same words.
macro_rules! parsed_text {
    ($(#[$doc:meta])* $name:ident($ty:ty), $expecting:literal, $parse:expr) => {
        $(#[$doc])*
        struct $name($ty);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$ty, E> {
                        let parse: fn(&str) -> Result<$ty, String> = $parse;
                        parse(text).map_err(E::custom)
                    }
                    // A bare number is parsed as its text: a number of
                    // bytes for a size, "needs a unit" for a duration.
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$ty, E> {
                        self.visit_str(&n.to_string())
                    }
                }
                d.deserialize_any(V).map($name)
            }
        }
    };
}

parsed_text!(
    /// A duration: `500ms`, `10s`, `2m`.
    Dur(Duration), "a duration such as \"500ms\", \"10s\" or \"2m\"", parse_duration
);
parsed_text!(
    /// A duration that may be zero.
    Delay(Duration), "a duration such as \"0s\" or \"2s\"", parse_delay
);
parsed_text!(
    /// A duration or `unlimited`.
    MaybeDur(Option<Duration>), "a duration such as \"30s\", or \"unlimited\"",
    |t| parse_optional_duration(t).map(|d| d.0)
);
parsed_text!(
    /// A size: `64KiB`, `16MiB`, or a number of bytes.
    Size(u64), "a size such as \"64KiB\" or \"16MiB\"", parse_size
);
parsed_text!(
    /// A size or `unlimited`.
    MaybeSize(Option<u64>), "a size such as \"1MiB\", or \"unlimited\"",
    |t| parse_optional_size(t).map(|s| s.0)
);
parsed_text!(
    /// A count or `unlimited`.
    MaybeCount(Option<u64>), "a number, or \"unlimited\"",
    |t| parse_optional_count(t).map(|n| n.0)
);
parsed_text!(
    /// A linear-memory size, 64KiB to 4GiB.
    Memory(u64), "a size such as \"16MiB\" (64KiB to 4GiB)", parse_memory
);
parsed_text!(
    /// An interface `grant` accepts, as `--grant` does.
    Grant(String), "\"wasi:filesystem\" or \"wasi:sockets\"",
    |t| match t {
        "wasi:filesystem" | "wasi:sockets" => Ok(t.to_string()),
        _ => Err(format!("`{t}` cannot be granted: expected \"wasi:filesystem\" or \"wasi:sockets\"")),
    }
);

/// An integer within `MIN..=MAX`.
struct Count<const MIN: u32, const MAX: u32>(u32);

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Count<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if n < MIN as i64 || n > MAX as i64 {
            return Err(de::Error::custom(format!("{n} is out of range: expected {MIN} to {MAX}")));
        }
        Ok(Count(n as u32))
    }
}

/// A guest configuration value: text, or a number or boolean taken as the
/// text it is written as (the guest reads strings).
struct ConfigValue(String);

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean (the guest reads it as text)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_any(V).map(ConfigValue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_log_keys_and_the_admin_table() {
        let text = "log-format = \"json\"\naccess-log = false\n[admin]\naddress = \"9901\"\n\
                    [listeners.a]\naddress = \"127.0.0.1:0\"\nguest = \"a.wasm\"\n";
        let file = ServeFile::parse(Path::new("n.toml"), text).unwrap();
        assert_eq!(file.log_format, Some(LogFormat::Json));
        assert_eq!(file.access_log, Some(false));
        assert_eq!(file.admin_address, Some("127.0.0.1:9901".parse().unwrap()));
        let bad = text.replace("address = \"9901\"", "adress = \"9901\"");
        let e = ServeFile::parse(Path::new("n.toml"), &bad).unwrap_err().to_string();
        assert!(e.contains("n.toml:4") && e.contains("adress"), "{e}");
        let bad = text.replace("\"9901\"", "\"nowhere\"");
        let e = ServeFile::parse(Path::new("n.toml"), &bad).unwrap_err().to_string();
        assert!(e.starts_with("n.toml:4: admin.address: `nowhere` is not IP:PORT"), "{e}");
    }
}
