use serde::{Deserialize, Serialize};

/// Unique identifier for any node in the global collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct NodeId(u32);

impl From<u32> for NodeId {
    fn from(value: u32) -> Self {
        Self(value)
    }
}

impl From<usize> for NodeId {
    fn from(value: usize) -> Self {
        Self(value as u32)
    }
}

impl From<i32> for NodeId {
    fn from(value: i32) -> Self {
        Self(value as u32)
    }
}

/// The host part of a node address such as `ws://10.0.0.2:3001` (`10.0.0.2`), or of
/// `ws://[::1]:3001` (`[::1]`): the interface a server of that node listens on (vismae patch).
pub fn host_of(address: &burn_communication::Address) -> String {
    let text = address.to_string();
    let rest = text.split_once("://").map_or(text.as_str(), |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host.to_string(),
        _ => authority.to_string(),
    }
}
