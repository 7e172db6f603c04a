//! The crash test: kill -9 the real binary while several clients push concurrently, restart it
//! on the same data folder, and check that everything the registry acknowledged is intact and
//! verifies, that nothing partial is visible, and that garbage collection keeps it all. Three
//! kill cycles, each at a pseudo-random moment.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use sha2::Digest as _;

const PW: &str = "crash-test-password";

/// A plain synchronous health probe.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// The server process and the port it logged; killed (SIGKILL) when dropped, so a failing test
/// leaves no process behind.
struct Server(Child, u16);

impl Server {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
    /// The port this run listens on (every start gets its own).
    fn port(&self) -> u16 {
        self.1
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `berth serve` on port 0, appending its logs to `log`, and waits until it is healthy
/// on the port its "Berth is listening" line names.
fn start(data: &std::path::Path, log_path: &std::path::Path) -> Server {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).unwrap();
    // Earlier runs wrote the start of the file; this run's listening line comes after.
    let from = log.metadata().unwrap().len() as usize;
    let mut child = Server(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("serve")
            .env("BERTH_DATA_DIR", data)
            .env("BERTH_LISTEN", "127.0.0.1:0")
            .env("BERTH_ADMIN_PASSWORD", PW)
            // Warnings, and info of the `berth*` targets: the start line (target `berth`)
            // names the address.
            .env("BERTH_LOG_LEVEL", "warn,berth=info")
            .env_remove("BERTH_TEST_PYTHON")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
        0,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    match support::wait_listening(&mut child.0, log_path, from, Duration::from_secs(30)) {
        Ok(addr) => child.1 = addr.port(),
        Err(status) => {
            let logs = std::fs::read(log_path).unwrap_or_default();
            panic!("berth exited with {status} before logging its address:\n{}", String::from_utf8_lossy(logs.get(from..).unwrap_or_default()))
        }
    }
    let port = child.port();
    while !healthy(port) {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("berth exited with {status} before becoming healthy");
        }
        assert!(Instant::now() < deadline, "berth did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// What the registry acknowledged: "repo:tag" -> (manifest digest, [(blob digest, size)]).
type Acked = Arc<Mutex<BTreeMap<String, (String, Vec<(String, usize)>)>>>;

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(port: u16) -> Client {
        Client {
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }
    fn req(&self, m: Method, path_or_url: &str) -> reqwest::RequestBuilder {
        let url = if path_or_url.starts_with("http") { path_or_url.to_owned() } else { format!("{}{path_or_url}", self.base) };
        self.http.request(m, url).basic_auth("admin", Some(PW))
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.req(Method::GET, path).send().await.unwrap()
    }
    /// Chunked upload: POST, PATCH chunks, PUT. Any failure (the server may die) is an Err.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Result<String, String> {
        let d = sha256(data);
        let r = self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).send().await.map_err(|e| e.to_string())?;
        if r.status() != 202 {
            return Err(format!("POST {}", r.status()));
        }
        let mut loc = r.headers()["location"].to_str().unwrap().to_owned();
        let mut off = 0;
        for chunk in data.chunks(256 * 1024) {
            let r = self
                .req(Method::PATCH, &loc)
                .header("content-range", format!("{}-{}", off, off + chunk.len() - 1))
                .body(chunk.to_vec())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status() != 202 {
                return Err(format!("PATCH {}", r.status()));
            }
            loc = r.headers()["location"].to_str().unwrap().to_owned();
            off += chunk.len();
        }
        let r = self.req(Method::PUT, &format!("{loc}?digest={d}")).send().await.map_err(|e| e.to_string())?;
        if r.status() != 201 {
            return Err(format!("PUT {}", r.status()));
        }
        Ok(d)
    }
}

async fn pusher(c: Client, worker: usize, acked: Acked, stop: Arc<AtomicBool>) {
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let repo = format!("crash/w{worker}");
        let size = 64 * 1024 + ((worker as u64 * 7919 + k * 104_729) % (1536 * 1024)) as usize;
        let layer: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + k * 17 + worker as u64) as u8).collect();
        let config = format!("{{\"worker\":{worker},\"k\":{k}}}").into_bytes();
        let Ok(ld) = c.push_blob(&repo, &layer).await else { continue };
        let Ok(cd) = c.push_blob(&repo, &config).await else { continue };
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{size}}}]}}"#,
            config.len()
        );
        let tag = format!("t{k}");
        let r = c
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(m.clone())
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status() == 201) {
            acked.lock().unwrap().insert(format!("{repo}:{tag}"), (sha256(m.as_bytes()), vec![(cd, config.len()), (ld, size)]));
        }
    }
}

/// Everything acknowledged is there and verifies; everything visible is complete.
async fn verify(c: &Client, acked: &Acked) -> usize {
    let acked = acked.lock().unwrap().clone();
    for (name, (digest, blobs)) in &acked {
        let (repo, tag) = name.split_once(':').unwrap();
        let r = c.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status(), 200, "acknowledged {name} lost");
        let body = r.bytes().await.unwrap();
        assert_eq!(&sha256(&body), digest, "{name} manifest changed");
        for (d, size) in blobs {
            let r = c.get(&format!("/v2/{repo}/blobs/{d}")).await;
            assert_eq!(r.status(), 200, "blob {d} of {name} lost");
            let b = r.bytes().await.unwrap();
            assert_eq!((b.len(), sha256(&b)), (*size, d.clone()), "blob {d} of {name} corrupt");
        }
    }
    // Every tag that is visible at all (acknowledged or not) has a complete, verifying manifest.
    let cat: serde_json::Value = c.get("/v2/_catalog").await.json().await.unwrap();
    for repo in cat["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: serde_json::Value = c.get(&format!("/v2/{repo}/tags/list")).await.json().await.unwrap();
        for tag in tags["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            let r = c.get(&format!("/v2/{repo}/manifests/{tag}")).await;
            assert_eq!(r.status(), 200, "{repo}:{tag} listed but unreadable");
            let dig = r.headers()["docker-content-digest"].to_str().unwrap().to_owned();
            let body = r.bytes().await.unwrap();
            assert_eq!(sha256(&body), dig, "{repo}:{tag} half-written");
            let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for desc in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
                let d = desc["digest"].as_str().unwrap();
                let r = c.get(&format!("/v2/{repo}/blobs/{d}")).await;
                assert_eq!(r.status(), 200, "{repo}:{tag} references missing {d}");
                assert_eq!(sha256(&r.bytes().await.unwrap()), d, "{repo}:{tag} blob {d} corrupt");
            }
        }
    }
    acked.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_pushes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("berth.log");
    let acked: Acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    for cycle in 0..3 {
        let mut child = start(&data, &log);
        let port = child.port();
        let c = Client::new(port);
        let before = verify(&c, &acked).await;
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> =
            (0..6).map(|w| tokio::spawn(pusher(Client::new(port), w + cycle * 10, acked.clone(), stop.clone()))).collect();
        // Kill at a pseudo-random moment between 1.0 and 2.5 seconds.
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(1000 + (seed >> 33) % 1500)).await;
        child.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        eprintln!("cycle {cycle}: {before} images verified at start, {} acknowledged now", acked.lock().unwrap().len());
    }
    assert!(acked.lock().unwrap().len() >= 3, "too few pushes completed to mean anything; see {}", log.display());
    // After the last crash: restart, verify, collect garbage with no grace, verify again.
    let mut child = start(&data, &log);
    let c = Client::new(child.port());
    let n = verify(&c, &acked).await;
    // The store keeps times in whole seconds and gc removes sessions idle since strictly before
    // its cutoff: wait until the sessions the last kill interrupted are a second old.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let gc = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["gc", "--grace", "0s", "--upload-ttl", "0s"])
        .env("BERTH_DATA_DIR", &data)
        .env("BERTH_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(gc.status.success(), "gc failed: {}", String::from_utf8_lossy(&gc.stderr));
    let out = String::from_utf8_lossy(&gc.stdout).into_owned();
    assert!(out.contains("garbage collection"), "{out}");
    assert_eq!(verify(&c, &acked).await, n);
    // Interrupted uploads left files; gc with a zero TTL removed them all.
    let uploads = std::fs::read_dir(data.join("uploads")).unwrap().count();
    assert_eq!(uploads, 0, "gc left upload files: {out}");
    child.kill9();
    eprintln!("{n} acknowledged images intact after 3 kill -9 cycles and gc; {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_while_pushing_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("berth.log");
    let acked: Acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut child = start(&data, &log);
    let port = child.port();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4).map(|w| tokio::spawn(pusher(Client::new(port), w, acked.clone(), stop.clone()))).collect();
    // `berth gc` runs as another process on the same database and blobs, over and over, while
    // the pushes run. A short grace (2 s) still protects blobs uploaded moments ago.
    let mut runs = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["gc", "--grace", "2s"])
            .env("BERTH_DATA_DIR", &data)
            .env("BERTH_LOG_LEVEL", "warn")
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "gc failed: {}", String::from_utf8_lossy(&out.stderr));
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let n = verify(&Client::new(port), &acked).await;
    assert!(n >= 5 && runs >= 2, "{n} pushes, {runs} gc runs: too few to mean anything");
    // Now an unreferenced blob older than the grace period goes, referenced ones stay.
    let c = Client::new(port);
    let orphan = c.push_blob("crash/orphan", b"nobody references me").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await; // timestamps have 1 s resolution
    let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(["gc", "--grace", "1s"]).env("BERTH_DATA_DIR", &data).output().unwrap();
    assert!(out.status.success());
    assert_eq!(c.get(&format!("/v2/crash/orphan/blobs/{orphan}")).await.status(), 404, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(verify(&c, &acked).await, n);
    child.kill9();
    eprintln!("{n} images pushed during {runs} concurrent gc runs, all intact");
}
