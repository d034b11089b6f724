//! Several machines training one model, on burn-collective's global level: rank 0 hosts the
//! coordinator (burn's orchestrator), every node registers with it and serves its tensors to the
//! others over WebSocket, and each step's gradients travel as one flat bucket ([`bucket`]) in
//! one all-reduce. Every wait is bounded: a node that dies or stalls makes the others stop with
//! an error that names it when it can be found ([`Group::sum`]). At start-up every node checks that it
//! runs the same settings, data and initial weights as rank 0 ([`Group::check`]).
//!
//! The global collective runs on the autodiff backend's type while the replicas inside a node
//! use its inner backend: burn-collective keeps one registration per backend type and process,
//! so the two levels never meet. The protocol has no authentication: a trusted cluster network only.

pub(crate) mod bucket;
mod topology;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use burn::collective::{self, AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_communication::Address;

pub use topology::{
    DEFAULT_PORT, DEFAULT_TIMEOUT_S, NodeFlags, Topology, default_address, first_host, host_port, resolve,
};

use crate::error::{Result, TrainError};

/// What every node must share with rank 0 before the first step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fingerprints {
    /// The run's settings (data path left out: nodes may mount it elsewhere).
    pub settings: [u8; 8],
    /// The dataset's manifests.
    pub dataset: [u8; 8],
    /// The weights the first step starts from (after a resume: the checkpoint's).
    pub weights: [u8; 8],
    /// What the three stand for, in a refusal (`node 1 differs from node 0 in ...`).
    pub names: [&'static str; 3],
}

/// The first 8 bytes of a hash.
fn short(h: &blake3::Hash) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    b
}

impl Fingerprints {
    /// The first 8 bytes of each hash.
    pub fn new(settings: &blake3::Hash, dataset: &blake3::Hash, weights: &blake3::Hash) -> Self {
        Self {
            settings: short(settings),
            dataset: short(dataset),
            weights: short(weights),
            names: ["the settings", "the dataset (its manifests)", "the initial weights"],
        }
    }

    /// What the nodes of a study share before its first cell: the study and how far each of its
    /// cells has got.
    pub fn study(study: &blake3::Hash, cells: &blake3::Hash) -> Self {
        Self {
            settings: short(study),
            dataset: short(cells),
            weights: [0; 8],
            names: [
                "the study file",
                "the study's cells or how far each has got (do all nodes share one study folder?)",
                "nothing",
            ],
        }
    }
}

/// A hash of a dataset's shard manifests (every image's pixel hash and origin), in shard order.
pub fn dataset_hash(root: &std::path::Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    for n in 0.. {
        let (_, manifest) = vismae_data::dataset::shard_paths(root, n);
        if !manifest.exists() {
            break;
        }
        let bytes =
            std::fs::read(&manifest).map_err(|e| TrainError::invalid(format!("{}: {e}", manifest.display())))?;
        h.update(&bytes);
    }
    Ok(h.finalize())
}

/// A hash of settings as JSON (the caller leaves out what nodes may hold differently).
pub fn settings_hash(settings: &impl serde::Serialize) -> Result<blake3::Hash> {
    Ok(blake3::hash(&serde_json::to_vec(settings).map_err(|e| TrainError::invalid(e.to_string()))?))
}

/// Adds float values to a hash, value by value (little-endian bytes).
pub fn hash_floats(h: &mut blake3::Hasher, values: &[f32]) {
    for chunk in values.chunks(4096) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        h.update(&bytes);
    }
}

/// Values per node in the start-up exchange: presence, 3 x 8 fingerprint bytes, IPv4, port and replicas.
const SLOT: usize = 1 + 24 + 4 + 2 + 1;

/// How a bounded call ended.
enum Bounded<T> {
    Done(T),
    TimedOut,
    Panicked,
}

/// Runs `f` in its own thread and waits at most `timeout` for it (a call that never returns is
/// left behind; the process is about to stop with an error).
fn bounded<T: Send + 'static>(timeout: Duration, f: impl FnOnce() -> T + Send + 'static) -> Bounded<T> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new().name("vismae-collective".into()).spawn(move || {
        let _ = tx.send(f());
    });
    if spawned.is_err() {
        return Bounded::Panicked;
    }
    match rx.recv_timeout(timeout) {
        Ok(v) => Bounded::Done(v),
        Err(mpsc::RecvTimeoutError::Timeout) => Bounded::TimedOut,
        Err(mpsc::RecvTimeoutError::Disconnected) => Bounded::Panicked,
    }
}

/// What a probe of a node's data port found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// It answered an HTTP request.
    Answers,
    /// Nobody takes connections there, or the connection closed unanswered.
    Stopped,
    /// A connection is taken but nothing answers.
    Stalled,
}

/// Asks the data service at `a` for a page that does not exist: a running service answers at
/// once (404); a stopped process's kernel still takes the connection, but nothing answers.
fn probe(a: SocketAddr) -> Probe {
    let wait = Duration::from_secs(3);
    let Ok(mut s) = TcpStream::connect_timeout(&a, wait) else { return Probe::Stopped };
    let request = format!("GET /vismae-probe HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n");
    let _ = s.set_write_timeout(Some(wait));
    let _ = s.set_read_timeout(Some(wait));
    let mut byte = [0u8; 1];
    match s.write_all(request.as_bytes()).and_then(|()| s.read(&mut byte)) {
        Ok(n) if n > 0 => Probe::Answers,
        Ok(_) => Probe::Stopped,
        Err(_) => Probe::Stalled,
    }
}

/// `ws://host:port`, with brackets around an IPv6 host.
fn ws(host: &str, port: u16) -> Result<Address> {
    let h = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    Address::from_str(&format!("ws://{h}:{port}")).map_err(TrainError::invalid)
}

/// Fails, naming the port and what it is for, when `host:port` cannot be listened on.
fn check_free(host: &str, port: u16, what: &str) -> Result<()> {
    TcpListener::bind((host, port)).map(drop).map_err(|e| {
        TrainError::invalid(format!(
            "cannot listen on {host}:{port} for the {what}: {e} (another run on this port? give another)"
        ))
    })
}

/// This node's membership of a multi-node run.
pub struct Group<B: Backend> {
    topology: Topology,
    peer: PeerId,
    /// Every node's data-service address, learnt in [`Group::check`].
    addresses: Mutex<Vec<Option<SocketAddr>>>,
    _b: std::marker::PhantomData<B>,
}

impl<B: Backend> Group<B> {
    /// Joins the run: rank 0 starts the coordinator; every node registers and waits (at most the
    /// timeout) until all have.
    pub fn join(topology: Topology, device: &B::Device) -> Result<Self> {
        quiet_burn_logs();
        let t = &topology;
        check_free(&t.address, t.data_port, "data service")?;
        if t.hosts_coordinator {
            check_free(&t.coordinator_host, t.coordinator_port, "coordinator")?;
            let (host, port) = (t.coordinator_host.clone(), t.coordinator_port);
            std::thread::Builder::new()
                .name("vismae-coordinator".into())
                .spawn(move || serve_coordinator(&host, port))
                .map_err(|e| TrainError::invalid(format!("cannot start the coordinator: {e}")))?;
        }
        let config = CollectiveConfig::default()
            .with_num_devices(1)
            .with_num_nodes(t.nodes as u32)
            .with_global_address(ws(&t.coordinator_host, t.coordinator_port)?)
            .with_node_address(ws(&t.address, t.data_port)?)
            .with_data_service_port(t.data_port)
            .with_global_all_reduce_strategy(AllReduceStrategy::Ring);
        let peer = PeerId::from(t.rank as u32);
        let dev = device.clone();
        let waiting = format!(
            "node {} of {}: the coordinator at {}:{} did not gather all {} nodes",
            t.rank, t.nodes, t.coordinator_host, t.coordinator_port, t.nodes
        );
        match bounded(t.timeout, move || collective::register::<B>(peer, dev, config)) {
            Bounded::Done(Ok(())) => {}
            Bounded::Done(Err(e)) => return Err(TrainError::Stopped(format!("{waiting}: {e:?}"))),
            Bounded::TimedOut => {
                return Err(TrainError::Stopped(format!(
                    "{waiting} within {:.0} s: start every node (ranks 0..{}) with the same --nodes and --coordinator",
                    t.timeout.as_secs_f64(),
                    t.nodes - 1
                )));
            }
            Bounded::Panicked => return Err(TrainError::Stopped(format!("{waiting}: the collective failed"))),
        }
        Ok(Self { topology, peer, addresses: Mutex::new(Vec::new()), _b: std::marker::PhantomData })
    }

    /// This node's place.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Sums `flat` over all nodes. Err: why the sum could not be made, naming the nodes that
    /// no longer answer where some do not.
    pub fn sum(&self, flat: Tensor<B, 1>, what: &str) -> std::result::Result<Tensor<B, 1>, String> {
        // the ring strategy slices the tensor over the nodes: at least one value per node
        let len = flat.dims()[0];
        let flat = if len < self.topology.nodes {
            let device = flat.device();
            Tensor::cat(vec![flat, Tensor::zeros([self.topology.nodes - len], &device)], 0)
        } else {
            flat
        };
        let prim = flat.into_primitive().tensor();
        let peer = self.peer;
        let (why, stalled) =
            match bounded(self.topology.timeout, move || collective::all_reduce::<B>(peer, prim, ReduceOperation::Sum))
            {
                Bounded::Done(Ok(p)) => {
                    let sum = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(p));
                    return Ok(if len < self.topology.nodes { sum.narrow(0, 0, len) } else { sum });
                }
                Bounded::Done(Err(e)) => (format!("failed ({e:?})"), false),
                Bounded::TimedOut => {
                    (format!("did not complete within {:.0} s", self.topology.timeout.as_secs_f64()), true)
                }
                Bounded::Panicked => ("failed (a peer connection broke)".into(), false),
            };
        let (gone, stuck) = self.probe();
        let mut who = String::new();
        if !gone.is_empty() {
            who.push_str(&format!(": {} stopped (no answer on its data port)", gone.join(", ")));
        }
        if !stuck.is_empty() {
            let sep = if who.is_empty() { ": " } else { "; " };
            who.push_str(&format!(
                "{sep}{} stalled (its data port takes connections but its process does not answer)",
                stuck.join(", ")
            ));
        }
        if who.is_empty() && stalled {
            who = ": every node still answers, so one is slower than the timeout; give a longer --node-timeout".into();
        }
        Err(format!("node {} of {}: the all-reduce of {what} {why}{who}", self.topology.rank, self.topology.nodes))
    }

    /// The other nodes that no longer take connections on their data port (stopped), and those
    /// that take them but do not answer a request (stalled: a stopped or hung process, whose
    /// kernel still accepts connections); all probed at once, each for a few seconds at most.
    fn probe(&self) -> (Vec<String>, Vec<String>) {
        let addresses = self.addresses.lock().map(|a| a.clone()).unwrap_or_default();
        let found: Vec<(String, Probe)> = std::thread::scope(|scope| {
            let probes: Vec<_> = addresses
                .iter()
                .enumerate()
                .filter(|(r, _)| *r != self.topology.rank)
                .filter_map(|(r, a)| a.map(|a| (r, a)))
                .map(|(r, a)| scope.spawn(move || (format!("node {r} ({a})"), probe(a))))
                .collect();
            probes.into_iter().filter_map(|p| p.join().ok()).collect()
        });
        let pick = |want: Probe| found.iter().filter(|(_, p)| *p == want).map(|(n, _)| n.clone()).collect();
        (pick(Probe::Stopped), pick(Probe::Stalled))
    }

    /// Checks that every node runs what rank 0 runs with as many replicas (`replicas`: this node's),
    /// and that every rank is taken once; learns
    /// every node's address. Every node gets the same verdict.
    pub fn check(&self, mine: &Fingerprints, replicas: usize) -> Result<()> {
        let (n, rank) = (self.topology.nodes, self.topology.rank);
        let mut v = vec![0f32; n * SLOT];
        let slot = &mut v[rank * SLOT..(rank + 1) * SLOT];
        slot[0] = 1.0;
        slot[31] = replicas as f32;
        for (i, b) in mine.settings.iter().chain(&mine.dataset).chain(&mine.weights).enumerate() {
            slot[1 + i] = f32::from(*b);
        }
        let v4 = (self.topology.address.as_str(), self.topology.data_port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.find(|a| a.is_ipv4()));
        if let Some(SocketAddr::V4(a)) = v4 {
            for (i, o) in a.ip().octets().iter().enumerate() {
                slot[25 + i] = f32::from(*o);
            }
            slot[29] = f32::from(a.port() >> 8);
            slot[30] = f32::from(a.port() & 0xff);
        }
        let device = Default::default();
        let flat = Tensor::<B, 1>::from_data(TensorData::new(v, [n * SLOT]), &device);
        let all = self
            .sum(flat, "the start-up check")
            .map_err(TrainError::Stopped)?
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        let byte = |r: usize, i: usize| all.get(r * SLOT + i).copied().unwrap_or(0.0).round() as u32;
        let mut problems = Vec::new();
        for r in 0..n {
            match byte(r, 0) {
                1 => {}
                0 => problems.push(format!("no node has rank {r}")),
                k => problems.push(format!("{k} nodes were given rank {r}")),
            }
        }
        if problems.is_empty() {
            let names = mine.names;
            for r in 1..n {
                let differs: Vec<&str> = (0..3)
                    .filter(|&p| (0..8).any(|i| byte(r, 1 + p * 8 + i) != byte(0, 1 + p * 8 + i)))
                    .map(|p| names[p])
                    .collect();
                if !differs.is_empty() {
                    problems.push(format!("node {r} differs from node 0 in {}", differs.join(", ")));
                }
                let (theirs, first) = (byte(r, 31), byte(0, 31));
                if theirs != first {
                    problems.push(format!(
                        "node {r} has {theirs} replicas, node 0 {first}: give every node the same --devices"
                    ));
                }
            }
        }
        let addresses = (0..n)
            .map(|r| {
                let ip = [byte(r, 25), byte(r, 26), byte(r, 27), byte(r, 28)].map(|o| o as u8);
                let port = (byte(r, 29) << 8 | byte(r, 30)) as u16;
                (port != 0).then(|| SocketAddr::from((ip, port)))
            })
            .collect();
        if let Ok(mut a) = self.addresses.lock() {
            *a = addresses;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TrainError::invalid(format!(
                "the nodes do not run the same thing, so none starts: {}",
                problems.join("; ")
            )))
        }
    }

    /// Joins the run as [`Group::join`] does (printing the topology unless `quiet`), then checks
    /// `mine` and the node's `replicas` against every node's ([`Group::check`]).
    pub fn start(
        topology: Topology,
        replicas: usize,
        quiet: bool,
        device: &B::Device,
        mine: &Fingerprints,
    ) -> Result<Self> {
        if !quiet {
            println!("{}", topology.describe(replicas));
        }
        let g = Self::join(topology, device)?;
        g.check(mine, replicas)?;
        Ok(g)
    }

    /// Leaves the collective (every node calls it after its last step).
    pub fn finish(self) {
        let _ = bounded(self.topology.timeout, move || collective::finish_collective::<B>(self.peer));
    }
}

impl<B: AutodiffBackend> Group<B> {
    /// Sums a node's gradients of `model` and `extra` values over the nodes, as one bucket.
    pub(crate) fn sum_gradients<M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: &GradientsParams,
        extra: &[f32],
        device: &B::Device,
        what: &str,
    ) -> std::result::Result<(GradientsParams, Vec<f32>), String> {
        let (flat, layout) = bucket::pack::<B, _>(model, grads, extra, device);
        let total = self.sum(Tensor::from_inner(flat), what)?.inner();
        Ok(bucket::unpack::<B, _>(model, total, &layout))
    }
}

/// burn-communication installs a subscriber that prints every connection and download at INFO
/// level, unless the process already has one: give it one that records nothing (vismae's own
/// messages say what matters). Its tokio workers report a broken peer connection by panicking, with a backtrace: make that one
/// line (the error of the call that failed says what it means for the run).
fn quiet_burn_logs() {
    let _ = tracing_core::dispatcher::set_global_default(tracing_core::Dispatch::none());
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("tokio-rt-worker")) {
                let p = info.payload();
                let what =
                    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
                eprintln!("vismae: a connection between nodes broke: {}", what.unwrap_or_default());
            } else {
                default(info);
            }
        }));
    });
}

/// Runs burn's global orchestrator on `host:port` until the process ends.
fn serve_coordinator(host: &str, port: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    match runtime {
        Ok(rt) => {
            if let Err(e) =
                rt.block_on(burn_collective::start_global_orchestrator_on(host, port, std::future::pending()))
            {
                eprintln!("vismae: the coordinator on {host}:{port} stopped: {e}");
            }
        }
        Err(e) => eprintln!("vismae: cannot start the coordinator's runtime: {e}"),
    }
}

/// `vismae coordinator`: runs the coordinator alone on `host:port` until the process is stopped
/// (the nodes then run with `--external-coordinator`).
pub fn run_coordinator(host: &str, port: u16) -> Result<()> {
    check_free(host, port, "coordinator")?;
    quiet_burn_logs();
    serve_coordinator(host, port);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_tells_a_running_node_from_a_stalled_and_a_stopped_one() {
        // a service that answers
        let running = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let at = running.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = std::thread::spawn(move || {
            if let Ok((mut s, _)) = running.accept() {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
            }
        });
        assert_eq!(probe(at), Probe::Answers);
        let _ = server.join();
        // a socket that listens (the kernel takes connections) in a process that never answers
        let frozen = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let frozen_at = frozen.local_addr().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(probe(frozen_at), Probe::Stalled);
        drop(frozen);
        // nobody listens
        assert_eq!(probe(frozen_at), Probe::Stopped);
    }
}
