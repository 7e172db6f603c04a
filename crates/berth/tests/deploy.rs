//! The Kubernetes manifests of `deploy/kubernetes` checked for what would break a deployment of
//! several Berth replicas on one PostgreSQL database and one S3 bucket. Every YAML document of
//! every file (multi-document files included) is parsed; then:
//!
//! - every object is a Kubernetes object in the namespace the manifests create, none twice;
//! - each `kustomization.yaml` lists exactly the object files of its folder, and its `images:`
//!   override an image the containers use;
//! - the Deployment's selector, the Service's, the PodDisruptionBudget's and the spread
//!   constraints' all select the pod labels; the Service's target port is a declared port;
//! - at least two replicas, and the budget allows one disruption but never all of them;
//! - the probes ask `/readyz` (readiness) and `/healthz` (liveness, start-up) on declared port
//!   names, whose numbers are the ports of `listen` and `metrics_listen` in berth.toml, which
//!   listen on every interface; the Prometheus annotations name the metrics port;
//! - `terminationGracePeriodSeconds` exceeds the preStop sleep plus berth.toml's `shutdown_grace`
//!   (Kubernetes counts the preStop hook in the grace period; the rest is Berth's to finish
//!   transfers before SIGKILL);
//! - `--config` resolves through a volume mount to the ConfigMap's berth.toml; every Secret and
//!   ConfigMap reference names an object and key of the manifests (unless optional); with a
//!   read-only root filesystem, `/tmp` and `data_dir` are writable mounts;
//! - the pods meet the Pod Security Standard the namespace enforces;
//! - the real binary accepts the configuration: `berth --config <berth.toml> config` with the
//!   container's environment (Secret values from the template) and nothing else succeeds
//!   without an "ignoring environment variables" warning, and every `BERTH_*` variable is one
//!   Berth reads (a value no setting can hold makes `berth config` fail);
//! - `credential-provider/` holds the kubelet's CredentialProviderConfig of
//!   docs/platforms/kubernetes.md, for the registry of `external_url`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize as _;
use serde_yaml_ng::Value;
use support::{run, CmdOutput};

// ------------------------------------------------------------------------------------------
// Loading

/// The folder under test.
fn deploy_dir() -> PathBuf {
    support::repo_root().join("deploy/kubernetes")
}

/// `path` relative to deploy/kubernetes, for messages.
fn rel(path: &Path) -> String {
    path.strip_prefix(deploy_dir()).unwrap_or(path).display().to_string()
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// Every YAML file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if is_yaml(&p) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// One YAML document of a file.
#[derive(Debug)]
struct Doc {
    file: PathBuf,
    /// 1-based position in its file.
    index: usize,
    value: Value,
}

/// The value at a dotted path (`spec.template.spec`; numbers index sequences), or Null.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    let mut cur = v;
    for seg in path.split('.') {
        let next = match (seg.parse::<usize>(), cur) {
            (Ok(n), Value::Sequence(s)) => s.get(n),
            _ => cur.get(seg),
        };
        match next {
            Some(n) => cur = n,
            None => return &NULL,
        }
    }
    cur
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path).as_str()
}

fn seq_at<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

/// A mapping of strings (labels, selectors, annotations, ConfigMap data).
fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let val = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k.as_str()?.to_owned(), val))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Doc {
    fn kind(&self) -> &str {
        str_at(&self.value, "kind").unwrap_or("")
    }
    fn name(&self) -> &str {
        str_at(&self.value, "metadata.name").unwrap_or("")
    }
    fn namespace(&self) -> Option<&str> {
        str_at(&self.value, "metadata.namespace")
    }
    fn what(&self) -> String {
        format!("{}#{} ({} {:?})", rel(&self.file), self.index, self.kind(), self.name())
    }
    /// A kubelet configuration file (a node's file, not a cluster object).
    fn is_kubelet_config(&self) -> bool {
        str_at(&self.value, "apiVersion").is_some_and(|a| a.starts_with("kubelet.config.k8s.io/"))
    }
    fn is_kustomization(&self) -> bool {
        self.kind() == "Kustomization"
    }
}

/// Every document of every YAML file in deploy/kubernetes.
struct Manifests {
    docs: Vec<Doc>,
}

fn parse_documents(file: &Path) -> Vec<Doc> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for (k, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(de).unwrap_or_else(|e| panic!("{} document {}: not YAML: {e}", rel(file), k + 1));
        if !value.is_null() {
            out.push(Doc { file: file.to_owned(), index: k + 1, value });
        }
    }
    out
}

impl Manifests {
    fn load() -> Manifests {
        let files = yaml_files(&deploy_dir());
        assert!(!files.is_empty(), "no YAML files in {}", deploy_dir().display());
        Manifests { docs: files.iter().flat_map(|f| parse_documents(f)).collect() }
    }

    /// The cluster objects (not kustomizations, not kubelet files).
    fn objects(&self) -> impl Iterator<Item = &Doc> {
        self.docs.iter().filter(|d| !d.is_kustomization() && !d.is_kubelet_config())
    }

    fn of_kind(&self, kind: &str) -> Vec<&Doc> {
        self.objects().filter(|d| d.kind() == kind).collect()
    }

    fn one(&self, kind: &str) -> &Doc {
        let found = self.of_kind(kind);
        assert_eq!(found.len(), 1, "expected exactly one {kind}, found {}", found.iter().map(|d| d.what()).collect::<Vec<_>>().join(", "));
        found[0]
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Doc> {
        self.objects().find(|d| d.kind() == kind && d.name() == name)
    }

    fn deployment(&self) -> &Doc {
        self.one("Deployment")
    }

    fn pod_spec(&self) -> &Value {
        at(&self.deployment().value, "spec.template.spec")
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        string_map(at(&self.deployment().value, "spec.template.metadata.labels"))
    }

    /// The Berth container: the only one, or the one named `berth`.
    fn container(&self) -> &Value {
        let cs = seq_at(self.pod_spec(), "containers");
        match cs {
            [one] => one,
            _ => cs
                .iter()
                .find(|c| str_at(c, "name") == Some("berth"))
                .unwrap_or_else(|| panic!("{}: no container named berth among {}", self.deployment().what(), cs.len())),
        }
    }

    /// The container's declared ports: name → number.
    fn container_ports(&self) -> BTreeMap<String, u64> {
        seq_at(self.container(), "ports")
            .iter()
            .filter_map(|p| Some((str_at(p, "name")?.to_owned(), at(p, "containerPort").as_u64()?)))
            .collect()
    }

    fn replicas(&self) -> u64 {
        // The API's default is 1.
        at(&self.deployment().value, "spec.replicas").as_u64().unwrap_or(1)
    }

    /// The value of `key` in a Secret or ConfigMap of the manifests (`data` is base64).
    fn object_value(&self, kind: &str, name: &str, key: &str) -> Option<String> {
        let doc = self.find(kind, name)?;
        if let Some(s) = at(&doc.value, "stringData").get(key).and_then(Value::as_str) {
            return Some(s.to_owned());
        }
        let raw = at(&doc.value, "data").get(key).and_then(Value::as_str)?;
        if kind == "Secret" {
            let bytes = base64::engine::general_purpose::STANDARD.decode(raw.trim()).ok()?;
            return String::from_utf8(bytes).ok();
        }
        Some(raw.to_owned())
    }

    fn object_keys(&self, kind: &str, name: &str) -> Vec<String> {
        let Some(doc) = self.find(kind, name) else { return Vec::new() };
        ["data", "stringData"].iter().flat_map(|f| string_map(at(&doc.value, f)).into_keys()).collect()
    }

    /// The container's environment in order, `envFrom` first (explicit `env` wins).
    fn env(&self) -> Vec<EnvVar> {
        let c = self.container();
        let mut out = Vec::new();
        for from in seq_at(c, "envFrom") {
            let prefix = str_at(from, "prefix").unwrap_or("");
            for (field, kind) in [("secretRef", "Secret"), ("configMapRef", "ConfigMap")] {
                if let Some(name) = str_at(from, &format!("{field}.name")) {
                    let optional = at(from, &format!("{field}.optional")).as_bool().unwrap_or(false);
                    let keys = self.object_keys(kind, name);
                    if keys.is_empty() && !optional {
                        out.push(EnvVar { name: format!("<envFrom {kind} {name}>"), source: EnvSource::Object { kind, name: name.to_owned(), key: String::new(), optional } });
                    }
                    for key in keys {
                        out.push(EnvVar { name: format!("{prefix}{key}"), source: EnvSource::Object { kind, name: name.to_owned(), key, optional } });
                    }
                }
            }
        }
        for e in seq_at(c, "env") {
            let name = str_at(e, "name").unwrap_or("").to_owned();
            let source = if let Some(v) = at(e, "value").as_str() {
                EnvSource::Literal(v.to_owned())
            } else if !at(e, "value").is_null() {
                EnvSource::Literal(serde_yaml_ng::to_string(at(e, "value")).unwrap().trim().to_owned())
            } else {
                let mut src = EnvSource::Other;
                for (field, kind) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")] {
                    let r = at(e, &format!("valueFrom.{field}"));
                    if !r.is_null() {
                        src = EnvSource::Object {
                            kind,
                            name: str_at(r, "name").unwrap_or("").to_owned(),
                            key: str_at(r, "key").unwrap_or("").to_owned(),
                            optional: at(r, "optional").as_bool().unwrap_or(false),
                        };
                    }
                }
                src
            };
            out.retain(|o: &EnvVar| o.name != name);
            out.push(EnvVar { name, source });
        }
        out
    }

    /// The environment as the container would see it, where the manifests say: literals, and
    /// the values of the Secret and ConfigMap templates (missing optional keys left out).
    fn env_values(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .filter_map(|e| match e.source {
                EnvSource::Literal(v) => Some((e.name, v)),
                EnvSource::Object { kind, name, key, .. } => self.object_value(kind, &name, &key).map(|v| (e.name, v)),
                EnvSource::Other => Some((e.name, "placeholder".to_owned())),
            })
            .collect()
    }

    /// Where `--config` points, and the ConfigMap and key it resolves to.
    fn config_file(&self) -> Result<ConfigFile, String> {
        let c = self.container();
        let words: Vec<&str> = seq_at(c, "command").iter().chain(seq_at(c, "args")).filter_map(Value::as_str).collect();
        let mut path = None;
        for (k, w) in words.iter().enumerate() {
            if *w == "--config" || *w == "-c" {
                path = words.get(k + 1).map(|s| (*s).to_owned());
            } else if let Some(p) = w.strip_prefix("--config=") {
                path = Some(p.to_owned());
            }
        }
        if path.is_none() {
            path = self.env_values().into_iter().find(|(k, _)| k == "BERTH_CONFIG").map(|(_, v)| v);
        }
        let path = path.ok_or("the container gives Berth no --config (nor BERTH_CONFIG): berth.toml would not be read")?;
        let mounts = seq_at(c, "volumeMounts");
        let (mount, rel_path) = mounts
            .iter()
            .find_map(|m| {
                let mp = str_at(m, "mountPath")?.trim_end_matches('/');
                match str_at(m, "subPath") {
                    Some(sub) if path == mp => Some((m, sub.to_owned())),
                    Some(_) => None,
                    None => path.strip_prefix(&format!("{mp}/")).map(|r| (m, r.to_owned())),
                }
            })
            .ok_or_else(|| format!("--config {path}: no volumeMount of the container holds that path"))?;
        let vol_name = str_at(mount, "name").unwrap_or("");
        let volume = seq_at(self.pod_spec(), "volumes")
            .iter()
            .find(|v| str_at(v, "name") == Some(vol_name))
            .ok_or_else(|| format!("--config {path}: the volumeMount names volume {vol_name:?}, which the pod does not define"))?;
        let cm = str_at(volume, "configMap.name").ok_or_else(|| format!("--config {path}: volume {vol_name:?} is not a configMap volume"))?;
        let items = seq_at(volume, "configMap.items");
        let key = if items.is_empty() {
            rel_path.clone()
        } else {
            items
                .iter()
                .find(|i| str_at(i, "path") == Some(rel_path.as_str()))
                .and_then(|i| str_at(i, "key"))
                .ok_or_else(|| format!("--config {path}: volume {vol_name:?} projects no item to {rel_path:?}"))?
                .to_owned()
        };
        let text = self
            .object_value("ConfigMap", cm, &key)
            .ok_or_else(|| format!("--config {path}: ConfigMap {cm:?} with key {key:?} is not in the manifests"))?;
        Ok(ConfigFile { path, configmap: cm.to_owned(), key, text })
    }

    /// berth.toml as the container reads it.
    fn berth_toml(&self) -> ConfigFile {
        self.config_file().unwrap_or_else(|e| panic!("{}: {e}", self.deployment().what()))
    }

    /// The effective value of a setting, as Berth resolves it: a literal `BERTH_<KEY>` of the
    /// container, else berth.toml, else None (Berth's default).
    fn setting(&self, key: &str) -> Option<String> {
        let env_key = format!("BERTH_{}", key.replace('.', "__").to_ascii_uppercase());
        if let Some((_, v)) = self.env_values().into_iter().find(|(k, _)| *k == env_key) {
            return Some(v);
        }
        let cfg = self.berth_toml();
        let table: toml::Table = toml::from_str(&cfg.text).unwrap_or_else(|e| panic!("ConfigMap {} key {}: not TOML: {e}", cfg.configmap, cfg.key));
        let mut cur = toml::Value::Table(table);
        for seg in key.split('.') {
            cur = cur.get(seg)?.clone();
        }
        Some(match cur {
            toml::Value::String(s) => s,
            other => other.to_string(),
        })
    }

    /// The preStop hook's sleep in seconds (the sleep action or `sleep N` in an exec hook).
    fn prestop_sleep(&self) -> u64 {
        let hook = at(self.container(), "lifecycle.preStop");
        if let Some(s) = at(hook, "sleep.seconds").as_u64() {
            return s;
        }
        let words: Vec<&str> = seq_at(hook, "exec.command").iter().filter_map(Value::as_str).collect();
        words
            .iter()
            .flat_map(|w| w.split_whitespace())
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[0].ends_with("sleep"))
            .and_then(|w| w[1].trim_end_matches('s').parse().ok())
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
enum EnvSource {
    Literal(String),
    Object { kind: &'static str, name: String, key: String, optional: bool },
    /// fieldRef, resourceFieldRef: not a value of the manifests.
    Other,
}

#[derive(Debug, Clone)]
struct EnvVar {
    name: String,
    source: EnvSource,
}

struct ConfigFile {
    path: String,
    configmap: String,
    key: String,
    text: String,
}

fn labels_selected(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The port of a socket address setting (`0.0.0.0:5000`) and whether it is on every interface.
fn addr_port(addr: &str) -> (bool, u64) {
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr:?} is not host:port"));
    (matches!(host, "0.0.0.0" | "[::]" | "::"), port.parse().unwrap_or_else(|_| panic!("{addr:?}: bad port")))
}

fn duration(setting: &str, value: Option<String>, default: Duration) -> Duration {
    value.map_or(default, |v| humantime::parse_duration(&v).unwrap_or_else(|e| panic!("{setting} = {v:?}: {e}")))
}

/// Kinds without a namespace among those the manifests use.
const CLUSTER_SCOPED: &[&str] = &["Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass", "CustomResourceDefinition"];

// ------------------------------------------------------------------------------------------
// The manifests themselves

#[test]
fn manifests_are_kubernetes_objects_in_their_namespace() {
    let m = Manifests::load();
    let namespaces: Vec<&str> = m.of_kind("Namespace").iter().map(|d| d.name()).collect();
    assert_eq!(namespaces.len(), 1, "the manifests should create one namespace, found {namespaces:?}");
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for d in &m.docs {
        if str_at(&d.value, "apiVersion").is_none() || d.kind().is_empty() {
            problems.push(format!("{}: no apiVersion or kind", d.what()));
            continue;
        }
        if d.is_kustomization() || d.is_kubelet_config() {
            continue;
        }
        if d.name().is_empty() {
            problems.push(format!("{}: no metadata.name", d.what()));
        }
        let scoped = !CLUSTER_SCOPED.contains(&d.kind());
        match d.namespace() {
            Some(ns) if !scoped => problems.push(format!("{}: a cluster-scoped object with namespace {ns:?}", d.what())),
            Some(ns) if ns != namespaces[0] => problems.push(format!("{}: namespace {ns:?}, not {:?}", d.what(), namespaces[0])),
            None if scoped => problems.push(format!("{}: no metadata.namespace (kubectl apply -f would put it in the current namespace)", d.what())),
            _ => {}
        }
        if !seen.insert((d.kind().to_owned(), d.namespace().map(str::to_owned), d.name().to_owned())) {
            problems.push(format!("{}: defined twice", d.what()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn kustomizations_list_exactly_the_files_present() {
    let m = Manifests::load();
    let root = deploy_dir();
    let mut problems = Vec::new();
    let mut dirs: BTreeSet<PathBuf> = yaml_files(&root).iter().map(|f| f.parent().unwrap().to_owned()).collect();
    dirs.insert(root.clone());
    for dir in dirs {
        let kfile = dir.join("kustomization.yaml");
        // Files of cluster objects in this folder (not the kustomization, not kubelet files).
        let present: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| is_yaml(p) && p.file_name().is_some_and(|n| n != "kustomization.yaml" && n != "kustomization.yml"))
            .filter(|p| m.docs.iter().any(|d| d.file == *p && !d.is_kubelet_config()))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        if !kfile.exists() {
            if !present.is_empty() {
                problems.push(format!("{}: objects {present:?} but no kustomization.yaml", rel(&dir)));
            }
            continue;
        }
        let docs = parse_documents(&kfile);
        let [k] = docs.as_slice() else {
            problems.push(format!("{}: {} documents, expected one Kustomization", rel(&kfile), docs.len()));
            continue;
        };
        if k.kind() != "Kustomization" {
            problems.push(format!("{}: kind {:?}, expected Kustomization", rel(&kfile), k.kind()));
        }
        let mut listed = BTreeSet::new();
        for r in seq_at(&k.value, "resources").iter().map(|r| r.as_str().unwrap_or("")) {
            let target = dir.join(r);
            if target.is_dir() {
                if !target.join("kustomization.yaml").exists() {
                    problems.push(format!("{}: resource {r:?} is a folder without kustomization.yaml", rel(&kfile)));
                }
            } else if !target.is_file() {
                problems.push(format!("{}: resource {r:?} does not exist", rel(&kfile)));
            } else if r.contains('/') {
                problems.push(format!("{}: resource {r:?} is in another folder; list that folder's kustomization instead", rel(&kfile)));
            } else if !listed.insert(r.to_owned()) {
                problems.push(format!("{}: resource {r:?} is listed twice", rel(&kfile)));
            } else if !present.contains(r) {
                problems.push(format!("{}: resource {r:?} holds no cluster object (a kubelet file?)", rel(&kfile)));
            }
        }
        for missing in present.difference(&listed) {
            problems.push(format!("{}: {missing} is in the folder but not in resources (kubectl apply -k would skip it)", rel(&kfile)));
        }
        // An image override that matches no container's image silently does nothing.
        let images: BTreeSet<String> = m
            .objects()
            .filter(|d| d.file.parent() == Some(dir.as_path()))
            .flat_map(|d| seq_at(&d.value, "spec.template.spec.containers").iter().chain(seq_at(&d.value, "spec.template.spec.initContainers")))
            .filter_map(|c| str_at(c, "image"))
            .map(|i| image_name(i).to_owned())
            .collect();
        for img in seq_at(&k.value, "images") {
            let name = str_at(img, "name").unwrap_or("");
            if !images.contains(name) {
                problems.push(format!("{}: images entry {name:?} matches no container image of the folder ({images:?})", rel(&kfile)));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// An image reference without its tag and digest.
fn image_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

#[test]
fn selectors_match_the_pod_labels() {
    let m = Manifests::load();
    let labels = m.pod_labels();
    let d = m.deployment();
    let mut problems = Vec::new();
    let deploy_sel = string_map(at(&d.value, "spec.selector.matchLabels"));
    if !labels_selected(&deploy_sel, &labels) {
        problems.push(format!("{}: spec.selector {deploy_sel:?} does not select the pod labels {labels:?} (the API refuses it)", d.what()));
    }
    let ports = m.container_ports();
    let services = m.of_kind("Service");
    assert!(!services.is_empty(), "no Service");
    for s in services {
        let sel = string_map(at(&s.value, "spec.selector"));
        if !labels_selected(&sel, &labels) {
            problems.push(format!("{}: selector {sel:?} does not select the pod labels {labels:?}: the Service would have no endpoints", s.what()));
        }
        for p in seq_at(&s.value, "spec.ports") {
            let target = at(p, "targetPort");
            let ok = match target {
                Value::String(name) => ports.contains_key(name),
                Value::Number(n) => ports.values().any(|v| Some(*v) == n.as_u64()),
                Value::Null => at(p, "port").as_u64().is_some_and(|n| ports.values().any(|v| *v == n)),
                _ => false,
            };
            if !ok {
                problems.push(format!("{}: targetPort {target:?} is not a port the container declares ({ports:?})", s.what()));
            }
        }
    }
    let pdb = m.one("PodDisruptionBudget");
    let sel = string_map(at(&pdb.value, "spec.selector.matchLabels"));
    if !labels_selected(&sel, &labels) {
        problems.push(format!("{}: selector {sel:?} does not select the pod labels {labels:?}: the budget would protect nothing", pdb.what()));
    }
    for (k, c) in seq_at(m.pod_spec(), "topologySpreadConstraints").iter().enumerate() {
        let sel = string_map(at(c, "labelSelector.matchLabels"));
        if !labels_selected(&sel, &labels) {
            problems.push(format!("{}: topologySpreadConstraints[{k}] selects {sel:?}, not the pod labels {labels:?}: it would spread nothing", d.what()));
        }
    }
    for (k, t) in seq_at(m.pod_spec(), "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution")
        .iter()
        .map(|t| at(t, "podAffinityTerm"))
        .chain(seq_at(m.pod_spec(), "affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution"))
        .enumerate()
    {
        let sel = string_map(at(t, "labelSelector.matchLabels"));
        if !labels_selected(&sel, &labels) {
            problems.push(format!("{}: podAntiAffinity term {k} selects {sel:?}, not the pod labels {labels:?}", d.what()));
        }
    }
    if seq_at(m.pod_spec(), "topologySpreadConstraints").is_empty() && at(m.pod_spec(), "affinity.podAntiAffinity").is_null() {
        problems.push(format!("{}: no topologySpreadConstraints or podAntiAffinity: every replica may land on one node", d.what()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// How many pods a PDB field allows (`2` or `"50%"`; percentages round up, as Kubernetes does).
fn pdb_count(v: &Value, replicas: u64) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let pct: u64 = s.strip_suffix('%')?.parse().ok()?;
            Some((pct * replicas).div_ceil(100))
        }
        _ => None,
    }
}

#[test]
fn replicas_survive_one_disruption() {
    let m = Manifests::load();
    let replicas = m.replicas();
    assert!(replicas >= 2, "{}: {replicas} replica(s): a node drain or a crash takes the registry down", m.deployment().what());
    let pdb = m.one("PodDisruptionBudget");
    let min = at(&pdb.value, "spec.minAvailable");
    let max = at(&pdb.value, "spec.maxUnavailable");
    let allowed = match (pdb_count(min, replicas), pdb_count(max, replicas)) {
        (Some(min), None) if max.is_null() => replicas.saturating_sub(min),
        (None, Some(max)) if min.is_null() => max.min(replicas),
        _ => panic!("{}: give exactly one of minAvailable and maxUnavailable (got {min:?} and {max:?})", pdb.what()),
    };
    assert!(allowed >= 1, "{}: allows no disruption of {replicas} replicas: node drains would block forever", pdb.what());
    assert!(allowed < replicas, "{}: allows {allowed} of {replicas} replicas down at once: a drain could take all of them", pdb.what());
}

#[test]
fn probes_and_ports_match_berth_toml() {
    let m = Manifests::load();
    let c = m.container();
    let ports = m.container_ports();
    let mut problems = Vec::new();
    for (probe, path, required) in [("readinessProbe", "/readyz", true), ("livenessProbe", "/healthz", true), ("startupProbe", "/healthz", false)] {
        let p = at(c, probe);
        if p.is_null() {
            if required {
                problems.push(format!("no {probe}"));
            }
            continue;
        }
        if str_at(p, "httpGet.path") != Some(path) {
            problems.push(format!("{probe}: path {:?}, expected {path}", at(p, "httpGet.path")));
        }
        match str_at(p, "httpGet.port") {
            Some(name) if ports.contains_key(name) => {}
            _ => problems.push(format!("{probe}: port {:?} is not one of the container's port names {:?}", at(p, "httpGet.port"), ports.keys())),
        }
        if str_at(p, "httpGet.scheme").is_some_and(|s| s != "HTTP") {
            problems.push(format!("{probe}: scheme {:?}, but berth.toml's listeners speak plain HTTP here", at(p, "httpGet.scheme")));
        }
    }
    // The ports the container declares are the ones Berth listens on, on every interface (a
    // probe from the kubelet and traffic from the Service do not come from 127.0.0.1).
    let listen = m.setting("listen").unwrap_or_else(|| "127.0.0.1:5000".into());
    let (all, port) = addr_port(&listen);
    if !all {
        problems.push(format!("listen = {listen:?}: only reachable inside the pod; use 0.0.0.0:{port}"));
    }
    let mut listeners = vec![port];
    listeners.extend(m.setting("metrics_listen").map(|ml| addr_port(&ml).1));
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        if let Some(number) = str_at(c, &format!("{probe}.httpGet.port")).and_then(|name| ports.get(name)) {
            if !listeners.contains(number) {
                problems.push(format!("{probe}: port {number} is neither listen's nor metrics_listen's ({listeners:?})"));
            }
        }
    }
    if !ports.values().any(|p| *p == port) {
        problems.push(format!("listen port {port} is not a declared container port ({ports:?})"));
    }
    let annotations = string_map(at(&m.deployment().value, "spec.template.metadata.annotations"));
    if annotations.get("prometheus.io/scrape").is_some_and(|s| s == "true") {
        let ml = m.setting("metrics_listen");
        match ml.as_deref().map(addr_port) {
            None => problems.push(
                "prometheus.io/scrape without metrics_listen: /metrics on the main listener needs an admin's credentials".into(),
            ),
            Some((all, mport)) => {
                if !all {
                    problems.push(format!("metrics_listen = {ml:?}: Prometheus cannot reach it from outside the pod"));
                }
                if annotations.get("prometheus.io/port").map(String::as_str) != Some(mport.to_string().as_str()) {
                    problems.push(format!("prometheus.io/port {:?}, but metrics_listen is on {mport}", annotations.get("prometheus.io/port")));
                }
                if !ports.values().any(|p| *p == mport) {
                    problems.push(format!("metrics_listen port {mport} is not a declared container port ({ports:?})"));
                }
                if annotations.get("prometheus.io/path").is_some_and(|p| p != "/metrics") {
                    problems.push(format!("prometheus.io/path {:?}, Berth serves /metrics", annotations.get("prometheus.io/path")));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}: {}", m.deployment().what(), problems.join("\n"));
}

#[test]
fn termination_grace_outlasts_prestop_and_shutdown_grace() {
    let m = Manifests::load();
    let grace = duration("shutdown_grace", m.setting("shutdown_grace"), Duration::from_secs(30));
    let prestop = m.prestop_sleep();
    assert!(prestop > 0, "{}: no preStop sleep: the pod leaves the load balancer only after it stopped accepting connections", m.deployment().what());
    // The API's default is 30 s.
    let tgps = at(m.pod_spec(), "terminationGracePeriodSeconds").as_u64().unwrap_or(30);
    assert!(
        tgps > prestop + grace.as_secs(),
        "{}: terminationGracePeriodSeconds {tgps} must exceed the preStop sleep ({prestop} s, counted in the grace period) + shutdown_grace ({} s): \
         else running transfers are killed",
        m.deployment().what(),
        grace.as_secs()
    );
}

#[test]
fn config_file_secrets_and_volumes_resolve() {
    let m = Manifests::load();
    let c = m.container();
    let mut problems = Vec::new();
    if let Err(e) = m.config_file() {
        problems.push(e);
    }
    let volumes: BTreeMap<&str, &Value> = seq_at(m.pod_spec(), "volumes").iter().filter_map(|v| Some((str_at(v, "name")?, v))).collect();
    for mount in seq_at(c, "volumeMounts") {
        let name = str_at(mount, "name").unwrap_or("");
        if !volumes.contains_key(name) {
            problems.push(format!("volumeMount {name:?}: no such volume"));
        }
    }
    for (name, v) in &volumes {
        for (field, kind) in [("configMap", "ConfigMap"), ("secret", "Secret")] {
            let obj = str_at(v, &format!("{field}.name")).or_else(|| str_at(v, &format!("{field}.secretName")));
            if let Some(obj) = obj {
                if m.find(kind, obj).is_none() && at(v, &format!("{field}.optional")).as_bool() != Some(true) {
                    problems.push(format!("volume {name:?}: {kind} {obj:?} is not in the manifests"));
                }
                for item in seq_at(v, &format!("{field}.items")) {
                    let key = str_at(item, "key").unwrap_or("");
                    if !m.object_keys(kind, obj).iter().any(|k| k == key) {
                        problems.push(format!("volume {name:?}: {kind} {obj:?} has no key {key:?}"));
                    }
                }
            }
        }
    }
    for e in m.env() {
        if let EnvSource::Object { kind, name, key, optional } = &e.source {
            if !optional && m.object_value(kind, name, key).is_none() {
                problems.push(format!("env {}: {kind} {name:?} key {key:?} is not in the manifests (the pod would not start)", e.name));
            }
        }
    }
    // With a read-only root filesystem, everything Berth writes must be on a writable mount.
    if at(c, "securityContext.readOnlyRootFilesystem").as_bool() == Some(true) {
        let writable = |path: &str| {
            seq_at(c, "volumeMounts").iter().any(|mnt| {
                let mp = str_at(mnt, "mountPath").unwrap_or("").trim_end_matches('/');
                at(mnt, "readOnly").as_bool() != Some(true) && (path == mp || path.starts_with(&format!("{mp}/")))
            })
        };
        if !writable("/tmp") {
            problems.push("readOnlyRootFilesystem, but /tmp is not a writable mount (an emptyDir)".into());
        }
        let data_dir = m.setting("data_dir").unwrap_or_else(|| "./berth-data".into());
        if !data_dir.starts_with('/') {
            problems.push(format!("data_dir {data_dir:?} is relative to the image's working folder; give an absolute path on a writable mount"));
        } else if !writable(&data_dir) {
            problems.push(format!("readOnlyRootFilesystem, but data_dir {data_dir:?} is not on a writable mount"));
        }
    } else {
        problems.push("the container's root filesystem is writable (securityContext.readOnlyRootFilesystem: true)".into());
    }
    if at(m.pod_spec(), "enableServiceLinks").as_bool() != Some(false) {
        problems.push("enableServiceLinks is not false: a Service named berth injects BERTH_PORT, BERTH_SERVICE_HOST, ... which Berth warns about at every start".into());
    }
    assert!(problems.is_empty(), "{}:\n{}", m.deployment().what(), problems.join("\n"));
}

#[test]
fn pods_meet_the_namespace_pod_security_standard() {
    let m = Manifests::load();
    let ns = m.one("Namespace");
    let level = string_map(at(&ns.value, "metadata.labels")).get("pod-security.kubernetes.io/enforce").cloned();
    assert!(level.is_some(), "{}: no pod-security.kubernetes.io/enforce label", ns.what());
    let pod = m.pod_spec();
    let mut problems = Vec::new();
    let containers: Vec<&Value> = seq_at(pod, "containers").iter().chain(seq_at(pod, "initContainers")).collect();
    // Both levels: no host namespaces, no privileged containers.
    for f in ["hostNetwork", "hostPID", "hostIPC"] {
        if at(pod, f).as_bool() == Some(true) {
            problems.push(format!("{f}: true"));
        }
    }
    for c in &containers {
        let name = str_at(c, "name").unwrap_or("?");
        let csc = |f: &str| at(c, &format!("securityContext.{f}"));
        if csc("privileged").as_bool() == Some(true) {
            problems.push(format!("container {name}: privileged"));
        }
        if level.as_deref() == Some("restricted") {
            if csc("allowPrivilegeEscalation").as_bool() != Some(false) {
                problems.push(format!("container {name}: allowPrivilegeEscalation must be false"));
            }
            if !seq_at(c, "securityContext.capabilities.drop").iter().any(|d| d.as_str() == Some("ALL")) {
                problems.push(format!("container {name}: capabilities.drop must contain ALL"));
            }
            let non_root = csc("runAsNonRoot").as_bool().or_else(|| at(pod, "securityContext.runAsNonRoot").as_bool());
            if non_root != Some(true) {
                problems.push(format!("container {name}: runAsNonRoot must be true (pod or container)"));
            }
            let uid = csc("runAsUser").as_u64().or_else(|| at(pod, "securityContext.runAsUser").as_u64());
            if uid == Some(0) {
                problems.push(format!("container {name}: runAsUser 0"));
            }
            let seccomp = str_at(c, "securityContext.seccompProfile.type").or_else(|| str_at(pod, "securityContext.seccompProfile.type"));
            if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
                problems.push(format!("container {name}: seccompProfile.type must be RuntimeDefault or Localhost (pod or container), is {seccomp:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{} enforces {level:?}, which the API would refuse pods of {}:\n{}", ns.what(), m.deployment().what(), problems.join("\n"));
}

// ------------------------------------------------------------------------------------------
// The real binary on the configuration

/// `berth [--config FILE] config` with exactly `env` (plus PATH and HOME), in a fresh folder.
fn berth_config(dir: &Path, config: Option<&Path>, env: &[(String, String)]) -> CmdOutput {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.env_clear().current_dir(dir);
    for k in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(f) = config {
        cmd.arg("--config").arg(f);
    }
    cmd.arg("config");
    run(&mut cmd)
}

/// Environment variables of the CLI, not settings (docs/configuration.md).
const CLI_ENV: &[&str] = &["BERTH_CONFIG", "BERTH_SERVER", "BERTH_USERNAME", "BERTH_PASSWORD", "BERTH_TOKEN", "BERTH_CA_FILE"];

#[test]
fn berth_accepts_the_configmap_and_the_environment() {
    let m = Manifests::load();
    let cfg = m.berth_toml();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, &cfg.text).unwrap();
    let env: Vec<(String, String)> = m.env_values().into_iter().filter(|(k, _)| k != "BERTH_CONFIG").collect();
    let out = berth_config(dir.path(), Some(&file), &env);
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        out.success(),
        "berth rejects ConfigMap {} key {} (mounted at {}) with the container's environment {names:?} (Secret values from the template):\n{}\n--- stdout:\n{}",
        cfg.configmap,
        cfg.key,
        cfg.path,
        out.stderr,
        out.stdout
    );
    assert!(
        !out.stderr.contains("ignoring environment variables"),
        "berth ignores some of the container's environment {names:?}:\n{}",
        out.stderr
    );
    // What berth.toml says arrived (the file was read, not only defaults).
    let effective: toml::Table = toml::from_str(&out.stdout).unwrap_or_else(|e| panic!("berth config printed no TOML ({e}):\n{}", out.stdout));
    for key in ["listen", "metrics_listen", "external_url"] {
        let want = m.setting(key);
        let have = effective.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        assert_eq!(have, want, "berth config's effective {key} differs from the manifests'");
    }
}

#[test]
fn every_berth_variable_names_a_setting() {
    // Berth reads only the BERTH_* variables that name a setting; others are dropped, and both
    // `berth serve` and `berth config` warn about them on stderr. Each variable is set alone (to
    // a value few settings accept: a failure to parse it also proves that Berth reads it).
    let m = Manifests::load();
    let dir = tempfile::tempdir().unwrap();
    let vars: Vec<String> = m.env().into_iter().map(|e| e.name).filter(|n| n.starts_with("BERTH_") && !CLI_ENV.contains(&n.as_str())).collect();
    assert!(!vars.is_empty(), "{}: no BERTH_* variables (BERTH_METADATA_URL expected)", m.deployment().what());
    let mut problems = Vec::new();
    for var in &vars {
        let out = berth_config(dir.path(), None, &[(var.clone(), "{berth_deploy_probe=1}".to_owned())]);
        if out.stderr.contains("ignoring environment variables") && out.stderr.contains(var.as_str()) {
            problems.push(format!("{var}: Berth does not read it (it names no setting; see docs/configuration.md)"));
        } else if !out.success() && !out.stderr.contains("invalid configuration") {
            problems.push(format!("{var}: berth config failed otherwise: {}", out.stderr.trim()));
        }
    }
    assert!(problems.is_empty(), "{}:\n{}", m.deployment().what(), problems.join("\n"));
}

// ------------------------------------------------------------------------------------------
// The kubelet's credential provider

/// The YAML block of docs/platforms/kubernetes.md that starts with `providers:`.
fn documented_providers() -> Value {
    let md = std::fs::read_to_string(support::repo_root().join("docs/platforms/kubernetes.md")).unwrap();
    let mut block = None;
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_start().starts_with("```yaml") => cur = Some(String::new()),
            Some(text) if line.trim_start().starts_with("```") => {
                if text.trim_start().starts_with("providers:") {
                    block = Some(text.clone());
                }
                cur = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    let block = block.expect("docs/platforms/kubernetes.md has no ```yaml block starting with providers:");
    let v: Value = serde_yaml_ng::from_str(&block).unwrap();
    at(&v, "providers").clone()
}

#[test]
fn credential_provider_config_is_the_documented_one() {
    let m = Manifests::load();
    let configs: Vec<&Doc> = m.docs.iter().filter(|d| d.kind() == "CredentialProviderConfig").collect();
    let [cpc] = configs.as_slice() else { panic!("expected one CredentialProviderConfig under credential-provider/, found {}", configs.len()) };
    assert!(rel(&cpc.file).starts_with("credential-provider/"), "{}: belongs in credential-provider/", cpc.what());
    let example = parse_documents(&support::repo_root().join("examples/kubernetes/credential-provider-config.yaml"));
    for f in ["apiVersion", "kind"] {
        assert_eq!(at(&cpc.value, f), at(&example[0].value, f), "{}: {f} differs from examples/kubernetes/credential-provider-config.yaml", cpc.what());
    }
    let providers = at(&cpc.value, "providers");
    assert_eq!(providers, &documented_providers(), "{}: providers differ from docs/platforms/kubernetes.md's block", cpc.what());
    // The plugin gives credentials only for --registry-url: it must be Berth's external_url,
    // and the kubelets must be allowed to request tokens for the audience.
    let external = m.setting("external_url").expect("berth.toml has no external_url");
    let external = external.trim_end_matches('/');
    let host = external.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("");
    let roles: Vec<&Doc> = m.of_kind("ClusterRole");
    for p in providers.as_sequence().unwrap() {
        let args: Vec<&str> = seq_at(p, "args").iter().filter_map(Value::as_str).collect();
        let url = args.windows(2).find(|w| w[0] == "--registry-url").map(|w| w[1]);
        assert_eq!(url, Some(external), "{}: --registry-url is not external_url", cpc.what());
        let images: Vec<&str> = seq_at(p, "matchImages").iter().filter_map(Value::as_str).collect();
        assert_eq!(images, [host], "{}: matchImages must be external_url's host only", cpc.what());
        let audience = str_at(p, "tokenAttributes.serviceAccountTokenAudience").unwrap_or("");
        assert!(
            roles.iter().any(|r| seq_at(&r.value, "rules")
                .iter()
                .any(|rule| seq_at(rule, "verbs").iter().any(|v| v.as_str() == Some("request-serviceaccounts-token-audience"))
                    && seq_at(rule, "resources").iter().any(|res| res.as_str() == Some(audience)))),
            "no ClusterRole lets the kubelets request tokens for the audience {audience:?}"
        );
    }
}

#[test]
fn helpers_by_table() {
    assert_eq!(image_name("your-registry.invalid/berth:0.1.0"), "your-registry.invalid/berth");
    assert_eq!(image_name("host:5000/berth"), "host:5000/berth");
    assert_eq!(image_name("host:5000/berth:1@sha256:ab"), "host:5000/berth");
    assert_eq!(pdb_count(&Value::from(1), 3), Some(1));
    assert_eq!(pdb_count(&Value::from("50%"), 3), Some(2));
    assert_eq!(addr_port("0.0.0.0:5000"), (true, 5000));
    assert_eq!(addr_port("127.0.0.1:9090"), (false, 9090));
    let v: Value = serde_yaml_ng::from_str("a: {b: [x, {c: 1}]}").unwrap();
    assert_eq!(at(&v, "a.b.1.c").as_u64(), Some(1));
    assert!(at(&v, "a.z.c").is_null());
}
