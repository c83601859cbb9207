//! The deployment files of deploy/: the Kubernetes manifests validate
//! offline against the API's schemas (kubernetes-validate --strict); the
//! ConfigMap carries deploy/netplug.toml verbatim; names and ports agree
//! across that file, the Dockerfile, the Deployment and the Service; and the
//! host accepts the shipped configuration with the guests compiled as the
//! image compiles them. The same for deploy/kubernetes/redis, the
//! Redis-backed variant: its manifests validate, its ConfigMap carries its
//! netplug.toml verbatim, which differs from deploy/netplug.toml only in
//! the resp listener's `kv`, a URL naming the Redis Service. (The image
//! itself is built and run by container.rs, with buildah.)

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn manifest_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    yaml_files(&manifest_dir(), 4)
}

/// The `.yaml` files directly in `dir`, sorted: at least `at_least`.
fn yaml_files(dir: &Path, at_least: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= at_least, "{}: {files:?}", dir.display());
    files
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads the manifests with PyYAML (a dependency of kubernetes-validate),
/// writes each ConfigMap key into the directory given, and prints what the
/// tests compare, one fact a line.
const READ_MANIFESTS: &str = r#"
import glob, os, sys, yaml
for path in sorted(glob.glob(os.path.join(sys.argv[1], '*.yaml'))):
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        kind = doc['kind']
        if kind == 'ConfigMap':
            for key, text in doc['data'].items():
                with open(os.path.join(sys.argv[2], key), 'w') as out:
                    out.write(text)
                print('configmap', doc['metadata']['name'], key)
        elif kind == 'Deployment':
            spec = doc['spec']['template']['spec']
            print('grace', spec['terminationGracePeriodSeconds'])
            for volume in spec.get('volumes', []):
                if 'configMap' in volume:
                    print('volume', volume['name'], volume['configMap']['name'])
            for c in spec['containers']:
                for port in c.get('ports', []):
                    print('container-port', port['name'], port['containerPort'])
                for probe in ('livenessProbe', 'readinessProbe'):
                    get = c[probe]['httpGet']
                    print('probe', probe, get['path'], get['port'])
                sleep = c.get('lifecycle', {}).get('preStop', {}).get('sleep', {}).get('seconds', 0)
                print('prestop-sleep', sleep)
                for mount in c.get('volumeMounts', []):
                    print('mount', mount['name'], mount['mountPath'])
        elif kind == 'Service':
            for port in doc['spec']['ports']:
                print('service-port', port['name'], port['port'], port['targetPort'])
"#;

/// What the manifests say, and the directory holding the ConfigMaps' files.
struct Facts {
    lines: Vec<Vec<String>>,
    configmap_dir: PathBuf,
}

impl Facts {
    /// The lines whose first word is `what`, without it.
    fn all(&self, what: &str) -> Vec<&[String]> {
        self.lines.iter().filter(|l| l[0] == what).map(|l| &l[1..]).collect()
    }

    fn one(&self, what: &str) -> &[String] {
        let found = self.all(what);
        assert_eq!(found.len(), 1, "one `{what}` in the manifests: {found:?}");
        found[0]
    }
}

fn facts() -> &'static Facts {
    static FACTS: OnceLock<Facts> = OnceLock::new();
    FACTS.get_or_init(|| read_facts(READ_MANIFESTS, &manifest_dir(), "configmaps"))
}

/// What `script` prints of the manifests in `dir`, its ConfigMaps' files
/// written into the scratch directory `name`.
fn read_facts(script: &str, dir: &Path, name: &str) -> Facts {
    let configmap_dir = scratch(name);
    let out = Command::new("python3").args(["-c", script]).arg(dir).arg(&configmap_dir).output().expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "reading the manifests with python3 and PyYAML failed (PyYAML comes with kubernetes-validate, \
         which `make test` installs into target/venv):\n{stderr}"
    );
    let lines =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split(' ').map(str::to_string).collect()).collect();
    Facts { lines, configmap_dir }
}

/// deploy/netplug.toml, parsed.
fn image_config_table() -> toml::Table {
    std::fs::read_to_string(image_config_path()).unwrap().parse().expect("deploy/netplug.toml parses")
}

fn port_of(address: &toml::Value) -> u16 {
    let address = address.as_str().expect("an address is a string");
    address.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("a port in {address}"))
}

#[test]
fn the_manifests_validate_strictly_against_the_kubernetes_schemas() {
    let files = manifests();
    validate_strictly(&files, files.len());
}

/// kubernetes-validate --strict on `files`, which hold `resources`
/// resources in all.
fn validate_strictly(files: &[PathBuf], resources: usize) {
    let out = match Command::new("kubernetes-validate").arg("--strict").args(files).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubernetes-validate is not installed: run the tests with `make test`, which installs it into target/venv"
        ),
        Err(e) => panic!("cannot run kubernetes-validate: {e}"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate --strict refused a manifest:\n{text}");
    // One `passed` line per resource: none skipped for want of a schema.
    assert_eq!(text.matches(" passed for resource ").count(), resources, "{text}");
}

#[test]
fn the_configmap_carries_deploy_netplug_toml_verbatim() {
    let facts = facts();
    assert_eq!(facts.one("configmap"), ["netplug", "netplug.toml"]);
    let shipped = std::fs::read_to_string(facts.configmap_dir.join("netplug.toml")).unwrap();
    let source = std::fs::read_to_string(image_config_path()).unwrap();
    assert!(
        shipped == source,
        "deploy/kubernetes/configmap.yaml's netplug.toml differs from deploy/netplug.toml: copy it over \
         (each line indented by four spaces)"
    );
}

#[test]
fn names_and_ports_agree_across_the_config_the_image_and_the_manifests() {
    let config = image_config_table();
    let listeners = config["listeners"].as_table().expect("[listeners.NAME] tables");
    let ports: BTreeMap<&str, u16> =
        listeners.iter().map(|(name, l)| (name.as_str(), port_of(&l["address"]))).collect();
    let admin_port = port_of(&config["admin"]["address"]);
    assert_eq!(admin_port, 9901, "the admin port's convention");

    let facts = facts();
    let container_ports: BTreeMap<&str, u16> =
        facts.all("container-port").iter().map(|p| (p[0].as_str(), p[1].parse().unwrap())).collect();
    let mut expected = ports.clone();
    expected.insert("admin", admin_port);
    assert_eq!(container_ports, expected, "the Deployment's container ports are the listeners' and the admin port");

    // The Service: every listener, by its port's name; not the admin port.
    let service: BTreeMap<&str, (u16, &str)> =
        facts.all("service-port").iter().map(|p| (p[0].as_str(), (p[1].parse().unwrap(), p[2].as_str()))).collect();
    let wanted: BTreeMap<&str, (u16, &str)> = ports.iter().map(|(&name, &port)| (name, (port, name))).collect();
    assert_eq!(service, wanted, "the Service's ports");

    // The probes ask the admin endpoint.
    let probes: Vec<(&str, &str, &str)> =
        facts.all("probe").iter().map(|p| (p[0].as_str(), p[1].as_str(), p[2].as_str())).collect();
    assert_eq!(probes, [("livenessProbe", "/livez", "admin"), ("readinessProbe", "/readyz", "admin")]);

    // The ConfigMap is mounted where the image's entrypoint reads it.
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    let entrypoint = dockerfile.lines().find(|l| l.starts_with("ENTRYPOINT ")).expect("an ENTRYPOINT");
    assert_eq!(entrypoint, r#"ENTRYPOINT ["/usr/local/bin/host", "serve", "/etc/netplug/netplug.toml"]"#);
    assert!(dockerfile.contains("COPY deploy/netplug.toml /etc/netplug/netplug.toml\n"), "the image's own copy");
    assert_eq!(facts.one("volume"), ["config", "netplug"]);
    assert_eq!(facts.one("mount"), ["config", "/etc/netplug"]);

    // The image exposes every port, and compiles every guest the file names.
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("an EXPOSE line")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(exposed, expected.values().copied().collect(), "EXPOSE");
    // The image's guests are copied, then compiled beside their copies.
    assert!(
        dockerfile.contains(&format!("for guest in {}; do", IMAGE_GUESTS.join(" "))),
        "deploy/Dockerfile copies {IMAGE_GUESTS:?}"
    );
    assert!(dockerfile.contains("for guest in hello echo http; do"), "deploy/Dockerfile compiles hello, echo, http");
    assert!(
        dockerfile.contains("compile --grant wasi:keyvalue /out/guests/resp.wasm"),
        "deploy/Dockerfile compiles resp"
    );
    assert!(dockerfile.contains("COPY --from=build /out/guests/ /usr/local/lib/netplug/\n"));
    for (name, listener) in listeners {
        let guest = listener["guest"].as_str().unwrap();
        let stem = guest.strip_prefix(IMAGE_GUEST_DIR).and_then(|g| g.strip_suffix(".cwasm"));
        assert!(
            stem.is_some_and(|stem| IMAGE_GUESTS.contains(&stem)),
            "listener {name}: {guest} is not one of the image's .cwasm guests"
        );
    }

    // The kubelet's SIGKILL comes after the preStop sleep and the host's
    // whole shutdown.
    let shutdown = humantime::parse_duration(config["shutdown-timeout"].as_str().unwrap()).unwrap();
    let pre_stop = Duration::from_secs(facts.one("prestop-sleep")[0].parse().unwrap());
    let grace = Duration::from_secs(facts.one("grace")[0].parse().unwrap());
    assert!(grace > shutdown + pre_stop, "terminationGracePeriodSeconds {grace:?} <= {pre_stop:?} + {shutdown:?}");
}

/// The image's guests, compiled once for this test process.
fn compiled_guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("guests");
        compile_image_guests(&dir);
        dir
    })
}

/// `host serve --check` on `text`, written as `dir/netplug.toml`.
fn check(dir: &Path, text: &str) -> (bool, String, String) {
    let path = dir.join("netplug.toml");
    std::fs::write(&path, text).unwrap();
    let out = run_host(&["serve", "--check", path.to_str().unwrap()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_listeners_check_with_the_guests_compiled_as_the_image_does() {
    // Without the admin table, which the next test is about.
    let dir = scratch("listeners");
    let (ok, stdout, stderr) = check(&dir, &image_config(compiled_guests(), false, false));
    assert!(ok, "deploy/netplug.toml's listeners: {stderr}");
    assert!(stdout.contains("ok, 4 listener(s): "), "{stdout}");
}

#[test]
fn the_shipped_config_checks_admin_endpoint_included() {
    // The probes of deploy/kubernetes/deployment.yaml need the admin
    // endpoint; a host without it refuses the `[admin]` table.
    let dir = scratch("admin");
    let hello = guest("hello");
    let tiny = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[listeners.hello]\naddress = \"127.0.0.1:0\"\nguest = \"{}\"\n",
        hello.display()
    );
    let (ok, _, stderr) = check(&dir, &tiny);
    assert!(
        ok,
        "this host refuses an `[admin]` table; deploy/netplug.toml and the Deployment's probes (/livez, /readyz on \
         port 9901) require the admin endpoint (`[admin] address`, `--admin-addr`):\n{stderr}"
    );
    let (ok, stdout, stderr) = check(&dir, &image_config(compiled_guests(), false, true));
    assert!(ok, "deploy/netplug.toml: {stderr}");
    assert!(stdout.contains("ok, 4 listener(s): "), "{stdout}");
}

// deploy/kubernetes/redis: the fleet's resp store on one Redis server.

fn redis_dir() -> PathBuf {
    manifest_dir().join("redis")
}

/// deploy/kubernetes/redis/netplug.toml.
fn redis_config_path() -> PathBuf {
    redis_dir().join("netplug.toml")
}

fn redis_manifests() -> Vec<PathBuf> {
    yaml_files(&redis_dir(), 2)
}

/// What the tests compare of deploy/kubernetes/redis, as READ_MANIFESTS
/// does for deploy/kubernetes.
const READ_REDIS_MANIFESTS: &str = r#"
import glob, os, sys, yaml
for path in sorted(glob.glob(os.path.join(sys.argv[1], '*.yaml'))):
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        kind, name = doc['kind'], doc['metadata']['name']
        print('resource', kind, name)
        if kind == 'ConfigMap':
            for key, text in doc['data'].items():
                with open(os.path.join(sys.argv[2], key), 'w') as out:
                    out.write(text)
                print('configmap', name, key)
        elif kind == 'Deployment':
            template = doc['spec']['template']
            print('replicas', name, doc['spec']['replicas'])
            for key, value in template['metadata']['labels'].items():
                print('pod-label', name, key, value)
            spec = template['spec']
            pod = spec.get('securityContext', {})
            for c in spec['containers']:
                args = c.get('args', [])
                for flag in ('--maxmemory', '--maxmemory-policy', '--port'):
                    if flag in args:
                        print('redis-arg', flag, args[args.index(flag) + 1])
                for port in c.get('ports', []):
                    print('container-port', name, port['name'], port['containerPort'])
                print('memory-limit', name, c['resources']['limits']['memory'])
                sc = c.get('securityContext', {})
                print('locked-down', name,
                      pod.get('runAsNonRoot') is True and sc.get('runAsNonRoot', True) is True,
                      sc.get('allowPrivilegeEscalation') is False,
                      sc.get('readOnlyRootFilesystem') is True,
                      sc.get('capabilities', {}).get('drop') == ['ALL'])
        elif kind == 'Service':
            print('service-type', name, doc['spec'].get('type', 'ClusterIP'))
            for key, value in doc['spec']['selector'].items():
                print('selector', name, key, value)
            for port in doc['spec']['ports']:
                print('service-port', name, port['name'], port['port'], port['targetPort'])
"#;

fn redis_facts() -> &'static Facts {
    static FACTS: OnceLock<Facts> = OnceLock::new();
    FACTS.get_or_init(|| read_facts(READ_REDIS_MANIFESTS, &redis_dir(), "redis-configmaps"))
}

/// `text` as a number of bytes, its suffix (case counts) one of `units`
/// or none.
fn bytes_of(text: &str, units: &[(&str, u64)]) -> u64 {
    let (digits, unit) = units
        .iter()
        .filter_map(|&(suffix, unit)| text.strip_suffix(suffix).map(|digits| (digits, unit)))
        .find(|(digits, _)| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or((text, 1));
    digits.parse::<u64>().unwrap_or_else(|_| panic!("a size: {text}")) * unit
}

/// Redis's memory units (`maxmemory 384mb`), for the text in lowercase.
const REDIS_UNITS: [(&str, u64); 6] =
    [("kb", 1 << 10), ("mb", 1 << 20), ("gb", 1 << 30), ("k", 1000), ("m", 1_000_000), ("g", 1_000_000_000)];
/// Kubernetes' quantities (`memory: 512Mi`).
const KUBERNETES_UNITS: [(&str, u64); 6] =
    [("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000)];

#[test]
fn the_redis_manifests_validate_strictly_against_the_kubernetes_schemas() {
    validate_strictly(&redis_manifests(), redis_facts().all("resource").len());
}

#[test]
fn the_redis_configmap_replaces_the_base_one_with_its_netplug_toml_verbatim() {
    // The name the base Deployment's volume mounts.
    let mounted = &facts().one("volume")[1];
    let facts = redis_facts();
    assert_eq!(facts.one("configmap"), [mounted.as_str(), "netplug.toml"]);
    let shipped = std::fs::read_to_string(facts.configmap_dir.join("netplug.toml")).unwrap();
    let source = std::fs::read_to_string(redis_config_path()).unwrap();
    assert!(
        shipped == source,
        "deploy/kubernetes/redis/configmap.yaml's netplug.toml differs from deploy/kubernetes/redis/netplug.toml: \
         copy it over (each line indented by four spaces)"
    );
}

/// The resp listener's `kv`, removed from `table`.
fn take_resp_kv(table: &mut toml::Table, file: &str) -> String {
    let resp = table
        .get_mut("listeners")
        .and_then(|listeners| listeners.get_mut("resp"))
        .and_then(toml::Value::as_table_mut)
        .unwrap_or_else(|| panic!("{file}: [listeners.resp]"));
    let kv = resp.remove("kv").and_then(|kv| kv.as_str().map(str::to_string));
    kv.unwrap_or_else(|| panic!("{file}: the resp listener's kv"))
}

/// The Redis URL of deploy/kubernetes/redis/netplug.toml's resp listener.
fn redis_kv_url() -> String {
    let mut table: toml::Table = std::fs::read_to_string(redis_config_path()).unwrap().parse().unwrap();
    take_resp_kv(&mut table, "deploy/kubernetes/redis/netplug.toml")
}

#[test]
fn the_redis_config_differs_from_the_image_config_only_in_the_resp_store() {
    // Parsed, so comments may differ: the values may not, but for the
    // resp listener's `kv`.
    let mut base = image_config_table();
    let mut redis: toml::Table = std::fs::read_to_string(redis_config_path())
        .unwrap()
        .parse()
        .expect("deploy/kubernetes/redis/netplug.toml parses");
    assert_eq!(take_resp_kv(&mut base, "deploy/netplug.toml"), "memory");
    let url = take_resp_kv(&mut redis, "deploy/kubernetes/redis/netplug.toml");
    assert!(url.starts_with("redis://"), "the resp listener's kv: {url}");
    assert!(
        base == redis,
        "deploy/kubernetes/redis/netplug.toml differs from deploy/netplug.toml elsewhere than the resp listener's kv: \
         change both"
    );
}

#[test]
fn the_redis_url_names_the_redis_service_and_its_port() {
    // redis://[USER:PASS@]HOST:PORT[/DB]
    let url = redis_kv_url();
    let rest = url.strip_prefix("redis://").unwrap();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    let address = rest.split('/').next().unwrap();
    let (host, port) = address.rsplit_once(':').unwrap_or_else(|| panic!("HOST:PORT in {url}"));
    let port: u16 = port.parse().unwrap_or_else(|_| panic!("a port in {url}"));

    let facts = redis_facts();
    let services = facts.all("service-port");
    let service = services
        .iter()
        .find(|s| host == s[0] || host.starts_with(&format!("{}.", s[0])))
        .unwrap_or_else(|| panic!("{url}: no Service named {host} in deploy/kubernetes/redis: {services:?}"));
    let name = service[0].as_str();
    assert_eq!(service[2].parse::<u16>().ok(), Some(port), "{url}: the Service {name}'s port");
    assert!(facts.all("service-type").contains(&&[name.to_string(), "ClusterIP".to_string()][..]));

    // The Service selects the Redis pods, and the port it forwards to is
    // the one Redis listens on.
    let deployment = facts.one("replicas");
    assert_eq!(deployment[1], "1", "one Redis server: each would hold a store of its own");
    let deployment = deployment[0].as_str();
    let labels: BTreeSet<(&str, &str)> =
        facts.all("pod-label").iter().filter(|l| l[0] == deployment).map(|l| (l[1].as_str(), l[2].as_str())).collect();
    let selector: BTreeSet<(&str, &str)> =
        facts.all("selector").iter().filter(|s| s[0] == name).map(|s| (s[1].as_str(), s[2].as_str())).collect();
    assert!(
        !selector.is_empty() && selector.is_subset(&labels),
        "Service {name} selects {selector:?}; pods: {labels:?}"
    );
    // The base Service and PodDisruptionBudget select the netplug pods by
    // this label: Redis's pods must not be among them.
    assert!(!labels.contains(&("app.kubernetes.io/name", "netplug")), "{labels:?}");
    let redis_port: u16 =
        facts.all("redis-arg").iter().find(|a| a[0] == "--port").map_or(6379, |a| a[1].parse().unwrap());
    let target = &service[3];
    let container_port = facts
        .all("container-port")
        .iter()
        .find(|p| p[0] == deployment && (&p[1] == target || &p[2] == target))
        .map(|p| p[2].parse::<u16>().unwrap());
    assert_eq!(container_port, Some(redis_port), "Service {name}'s targetPort {target}");

    // Full is an error, never a silent eviction, and below the container's
    // memory limit.
    let args: BTreeMap<&str, &str> = facts.all("redis-arg").iter().map(|a| (a[0].as_str(), a[1].as_str())).collect();
    assert_eq!(args.get("--maxmemory-policy"), Some(&"noeviction"));
    let maxmemory = bytes_of(&args.get("--maxmemory").expect("--maxmemory").to_ascii_lowercase(), &REDIS_UNITS);
    let limit = bytes_of(&facts.one("memory-limit")[1], &KUBERNETES_UNITS);
    assert!(maxmemory > 0 && maxmemory < limit, "--maxmemory {maxmemory} bytes, memory limit {limit} bytes");
    assert_eq!(facts.one("locked-down")[1..], ["True", "True", "True", "True"], "non-root, read-only, no privilege");
}

#[test]
fn the_redis_manifests_say_how_to_apply_them_without_the_base_configmap() {
    let mut files = redis_manifests();
    files.push(redis_config_path());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // The leading comment, its continued lines joined.
        let comment: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim().trim_end_matches('\\'))
            .collect::<Vec<_>>()
            .join(" ");
        let command = comment.split_once("kubectl apply ").map(|(_, c)| c).unwrap_or_else(|| {
            panic!("{}: no `kubectl apply` in its leading comment", file.display());
        });
        let words: Vec<&str> = command.split_whitespace().collect();
        let applied: Vec<&str> = words.windows(2).filter(|w| w[0] == "-f").map(|w| w[1]).collect();
        assert_eq!(applied.first(), Some(&"deploy/kubernetes/redis/"), "{}: {command}", file.display());
        for path in &applied {
            assert!(repo_root().join(path).exists(), "{}: {path} does not exist", file.display());
            assert_ne!(*path, "deploy/kubernetes/configmap.yaml", "{}: the base ConfigMap", file.display());
        }
        for base in ["deployment.yaml", "service.yaml"] {
            assert!(applied.contains(&format!("deploy/kubernetes/{base}").as_str()), "{}: {command}", file.display());
        }
    }
}

#[test]
fn the_redis_config_checks_with_the_guests_compiled_as_the_image_does() {
    // `--check` does not connect to the store: no Redis needed.
    let dir = scratch("redis");
    let text = image_config_from(&redis_config_path(), compiled_guests(), false, true);
    let (ok, stdout, stderr) = check(&dir, &text);
    assert!(ok, "deploy/kubernetes/redis/netplug.toml: {stderr}");
    assert!(stdout.contains("ok, 4 listener(s): "), "{stdout}");
}
