//! The embedded broker: librdkafka's in-process mock cluster, for `demo` and `serve` with nothing
//! installed. It speaks the Kafka protocol on loopback, keeps data in memory, and serves clients in other
//! processes through its bootstrap address, which is written to the state directory for them to find.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::error::{Error, Result};
use crate::topics::{Topic, TopicNames};

/// Name of the file in the state directory that holds a running embedded broker's address.
pub const ADDRESS_FILE: &str = "broker.addr";

/// A running mock cluster; it stops when dropped, and removes its address file.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    address_file: PathBuf,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker").field("bootstrap", &self.cluster.bootstrap_servers()).finish()
    }
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster, creates `topics` through its own API, and writes its address to
    /// `state_dir/broker.addr`.
    pub fn start(state_dir: &Path, names: &TopicNames) -> Result<Self> {
        let cluster = MockCluster::new(1)?;
        for role in Topic::ALL {
            cluster.create_topic(&names.name(role), role.partitions(), 1)?;
        }
        std::fs::create_dir_all(state_dir)
            .map_err(|source| Error::Io { path: state_dir.display().to_string(), source })?;
        let address_file = state_dir.join(ADDRESS_FILE);
        std::fs::write(&address_file, cluster.bootstrap_servers())
            .map_err(|source| Error::Io { path: address_file.display().to_string(), source })?;
        Ok(Self { cluster, address_file })
    }

    /// The bootstrap address clients connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates one more topic (the mock cluster does not serve CreateTopics requests).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        Ok(self.cluster.create_topic(name, partitions, 1)?)
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.address_file);
    }
}

/// The address of an embedded broker that a `demo` or `serve` in another shell started with this state
/// directory, if one is running (the file exists and something answers at the address).
pub fn discover(state_dir: &Path) -> Option<String> {
    let address = std::fs::read_to_string(state_dir.join(ADDRESS_FILE)).ok()?;
    let address = address.trim().to_owned();
    let first = address.split(',').next()?;
    let socket: SocketAddr = first.to_socket_addrs().ok()?.next()?;
    TcpStream::connect_timeout(&socket, Duration::from_millis(500)).ok()?;
    Some(address)
}
