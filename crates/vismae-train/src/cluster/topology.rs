//! Where this process sits among the nodes of a multi-node run: resolved from `--nodes`,
//! `--node-rank` and `--coordinator`, or from the variables of the launchers people use (Slurm's
//! `SLURM_NTASKS`, `SLURM_PROCID`, `SLURM_JOB_NODELIST`; torchrun's `WORLD_SIZE`, `RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`), with this node's own address and data port.

use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use crate::error::{Result, TrainError};

/// The coordinator port when a launcher gives none (torchrun's default).
pub const DEFAULT_PORT: u16 = 29500;
/// How long a node waits for the others before it stops (seconds).
pub const DEFAULT_TIMEOUT_S: f64 = 120.0;

/// What the user said on the command line (every field optional: launchers fill the rest).
#[derive(Clone, Debug, Default)]
pub struct NodeFlags {
    /// `--nodes N`: processes (one per machine) that train one model.
    pub nodes: Option<usize>,
    /// `--node-rank R` (0-based; rank 0 hosts the coordinator and alone writes the run folder).
    pub rank: Option<usize>,
    /// `--coordinator HOST:PORT`.
    pub coordinator: Option<String>,
    /// `--node-address HOST`: where this node's data service listens and the others reach it.
    pub address: Option<String>,
    /// `--data-port P` (default: the coordinator's port + 1 + rank).
    pub data_port: Option<u16>,
    /// `--node-timeout S`.
    pub timeout_s: Option<f64>,
    /// `--external-coordinator`: rank 0 does not host the coordinator (`vismae coordinator` runs it).
    pub external_coordinator: bool,
}

impl NodeFlags {
    /// Whether any multi-node flag was given.
    pub fn any(&self) -> bool {
        self.nodes.is_some()
            || self.rank.is_some()
            || self.coordinator.is_some()
            || self.address.is_some()
            || self.data_port.is_some()
            || self.timeout_s.is_some()
            || self.external_coordinator
    }
}

/// One node's place in a multi-node run.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// Nodes in the run.
    pub nodes: usize,
    /// This node's rank.
    pub rank: usize,
    /// The coordinator's host.
    pub coordinator_host: String,
    /// The coordinator's port.
    pub coordinator_port: u16,
    /// This node's address (its data service listens there only).
    pub address: String,
    /// This node's data-service port.
    pub data_port: u16,
    /// How long a collective may take before the node stops.
    pub timeout: Duration,
    /// Where the settings came from: `flags`, `Slurm` or `torchrun`.
    pub source: &'static str,
    /// Whether this node hosts the coordinator (rank 0, unless it runs elsewhere).
    pub hosts_coordinator: bool,
}

impl Topology {
    /// Whether this node writes the run folder (checkpoints, metrics, weights).
    pub fn writes(&self) -> bool {
        self.rank == 0
    }

    /// A line for people: what this node is and whom it talks to.
    pub fn describe(&self, devices: usize) -> String {
        format!(
            "node {} of {} ({}): coordinator {}:{}{}, data service {}:{}, {} replica{} here, {} in all; timeout {:.0} s",
            self.rank,
            self.nodes,
            self.source,
            self.coordinator_host,
            self.coordinator_port,
            if self.hosts_coordinator { " (hosted here)" } else { "" },
            self.address,
            self.data_port,
            devices,
            if devices == 1 { "" } else { "s" },
            devices * self.nodes,
            self.timeout.as_secs_f64()
        )
    }
}

/// Resolves the topology from `flags`, else from the launcher variables `env` reads. `None`: one
/// node (no flag and no launcher with more than one task).
pub fn resolve(flags: &NodeFlags, env: impl Fn(&str) -> Option<String>) -> Result<Option<Topology>> {
    let number = |name: &str| -> Result<Option<usize>> {
        env(name)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| TrainError::invalid(format!("{name}={v:?} is not a number")))
            })
            .transpose()
    };
    // --coordinator, else MASTER_ADDR (else `fallback`) with MASTER_PORT (else the default port)
    let launched = |fallback: Option<String>| {
        flags.coordinator.clone().or_else(|| {
            let port = env("MASTER_PORT").unwrap_or_else(|| DEFAULT_PORT.to_string());
            env("MASTER_ADDR").or(fallback).map(|h| format!("{h}:{port}"))
        })
    };
    let (nodes, rank, coordinator, source) = if let Some(n) = flags.nodes {
        (n, flags.rank, flags.coordinator.clone(), "flags")
    } else if let Some(n) = number("SLURM_NTASKS")?.filter(|&n| n > 1) {
        let first = env("SLURM_JOB_NODELIST").or_else(|| env("SLURM_NODELIST")).map(|l| first_host(&l));
        (n, flags.rank.or(number("SLURM_PROCID")?), launched(first), "Slurm")
    } else if let Some(n) = number("WORLD_SIZE")?.filter(|&n| n > 1) {
        (n, flags.rank.or(number("RANK")?), launched(None), "torchrun")
    } else if flags.any() {
        return Err(TrainError::invalid(
            "--node-rank, --coordinator, --node-address, --data-port, --node-timeout and --external-coordinator need --nodes N (or a Slurm or torchrun launch)",
        ));
    } else {
        return Ok(None);
    };
    if nodes == 0 {
        return Err(TrainError::invalid("--nodes must be at least 1"));
    }
    if nodes == 1 {
        return Ok(None);
    }
    let rank = rank.ok_or_else(|| {
        TrainError::invalid(format!("{nodes} nodes ({source}) but no rank for this one: give --node-rank R"))
    })?;
    if rank >= nodes {
        return Err(TrainError::invalid(format!("--node-rank {rank} is not below --nodes {nodes}")));
    }
    let coordinator = coordinator.ok_or_else(|| {
        TrainError::invalid(format!("{nodes} nodes ({source}) but no coordinator: give --coordinator HOST:PORT"))
    })?;
    let (coordinator_host, coordinator_port) = host_port(&coordinator)?;
    let address = match &flags.address {
        Some(a) => a.clone(),
        None => own_address(&coordinator_host, coordinator_port)?,
    };
    let data_port = match flags.data_port {
        Some(p) => p,
        None => u16::try_from(usize::from(coordinator_port) + 1 + rank).map_err(|_| {
            TrainError::invalid(format!("no default data port above {coordinator_port}: give --data-port"))
        })?,
    };
    let timeout_s = flags.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        return Err(TrainError::invalid(format!("--node-timeout {timeout_s} must be a positive number of seconds")));
    }
    Ok(Some(Topology {
        nodes,
        rank,
        coordinator_host,
        coordinator_port,
        address,
        data_port,
        timeout: Duration::from_secs_f64(timeout_s),
        source,
        hosts_coordinator: rank == 0 && !flags.external_coordinator,
    }))
}

/// `HOST:PORT` (or `[V6]:PORT`) split.
pub fn host_port(text: &str) -> Result<(String, u16)> {
    let bad = || TrainError::invalid(format!("--coordinator {text:?} is not HOST:PORT"));
    let (host, port) = text.trim().rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The first host of a Slurm host list: `node[03-05,9],gpu1` gives `node03`.
pub fn first_host(list: &str) -> String {
    let mut depth = 0;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let first = list[..end].trim();
    match first.split_once('[') {
        Some((prefix, rest)) => {
            let range = rest.trim_end_matches(']').split(',').next().unwrap_or("");
            let start = range.split('-').next().unwrap_or("");
            format!("{prefix}{start}")
        }
        None => first.to_string(),
    }
}

/// This machine's address on its default route (no packet is sent), for a coordinator run alone.
pub fn default_address() -> Result<String> {
    let socket = UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|s| s.connect(("192.0.2.1", 9)).map(|()| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| TrainError::invalid(format!("this machine has no default route ({e}): give --bind HOST")))?;
    Ok(socket.ip().to_string())
}

/// This machine's address on the route to the coordinator: the coordinator's own loopback
/// address when it is on this machine's loopback, else the source address the kernel picks to
/// reach it. Never the wildcard address.
fn own_address(host: &str, port: u16) -> Result<String> {
    let target = (host, port)
        .to_socket_addrs()
        .map_err(|e| TrainError::invalid(format!("the coordinator host {host:?} does not resolve: {e}")))?
        .next()
        .ok_or_else(|| TrainError::invalid(format!("the coordinator host {host:?} has no address")))?;
    if target.ip().is_loopback() {
        return Ok(target.ip().to_string());
    }
    let any: IpAddr = if target.is_ipv4() { [0, 0, 0, 0].into() } else { [0u16; 8].into() };
    let socket = UdpSocket::bind((any, 0))
        .and_then(|s| s.connect(target).map(|()| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| {
            TrainError::invalid(format!(
                "no route from this machine to the coordinator {target}: {e}; give --node-address"
            ))
        })?;
    Ok(socket.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn slurm_host_lists_give_their_first_host() {
        assert_eq!(first_host("node[03-05,9],gpu1"), "node03");
        assert_eq!(first_host("a1,a2"), "a1");
        assert_eq!(first_host("gpu[7]"), "gpu7");
        assert_eq!(first_host("single"), "single");
    }

    #[test]
    fn flags_slurm_and_torchrun_resolve_to_the_same_topology() {
        let flags = NodeFlags {
            nodes: Some(2),
            rank: Some(1),
            coordinator: Some("127.0.0.1:4100".into()),
            ..Default::default()
        };
        let t = resolve(&flags, env(&[])).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("one node"));
        assert_eq!((t.nodes, t.rank, t.coordinator_port, t.data_port), (2, 1, 4100, 4102));
        assert_eq!(t.address, "127.0.0.1");
        let slurm = [
            ("SLURM_NTASKS", "2"),
            ("SLURM_PROCID", "1"),
            ("SLURM_JOB_NODELIST", "127.0.0.1"),
            ("MASTER_PORT", "4100"),
        ];
        let s = resolve(&NodeFlags::default(), env(&slurm)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.map(|s| Topology { source: "flags", ..s }), Some(t.clone()));
        let torch = [("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "4100")];
        let r = resolve(&NodeFlags::default(), env(&torch)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.map(|r| Topology { source: "flags", ..r }), Some(t));
        // one task, or nothing at all, is one node
        assert_eq!(resolve(&NodeFlags::default(), env(&[("SLURM_NTASKS", "1")])).ok(), Some(None));
        assert_eq!(resolve(&NodeFlags::default(), env(&[])).ok(), Some(None));
    }

    #[test]
    fn incomplete_or_wrong_settings_say_what_is_missing() {
        let e = |f: NodeFlags| resolve(&f, env(&[])).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e(NodeFlags { nodes: Some(2), ..Default::default() }).contains("--node-rank"));
        let no_coord = NodeFlags { nodes: Some(2), rank: Some(0), ..Default::default() };
        assert!(e(no_coord).contains("--coordinator"));
        let high = NodeFlags { nodes: Some(2), rank: Some(2), coordinator: Some("h:1".into()), ..Default::default() };
        assert!(e(high).contains("not below"));
        let bad = NodeFlags { nodes: Some(2), rank: Some(0), coordinator: Some("nohost".into()), ..Default::default() };
        assert!(e(bad).contains("HOST:PORT"));
        assert!(e(NodeFlags { rank: Some(1), ..Default::default() }).contains("need --nodes"));
    }
}
