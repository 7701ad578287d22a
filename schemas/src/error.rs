//! The crate's one error type, grouped by whose fault it is and whether a retry can help.

/// Errors of the event contract and the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- Bad input: retrying the same input fails the same way. ---
    /// Bytes that are not a ChaosEater event.
    #[error("cannot decode event: {0}")]
    Decode(String),
    /// An event or command that decodes but breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// A fault whose type or parameters are wrong.
    #[error(transparent)]
    Fault(#[from] crate::faults::FaultError),

    // --- Our bug or a broken installation. ---
    /// A shipped or supplied schema that does not parse.
    #[error("schema {origin}: {source}")]
    Schema { origin: String, source: Box<apache_avro::Error> },
    /// A typed event that does not fit its own schema.
    #[error("cannot encode {kind} event: {source}")]
    Encode { kind: &'static str, source: Box<apache_avro::Error> },
    /// A component's own stored state that does not parse: a bug or a damaged store, never a default.
    #[error("corrupt state at key {key}: {reason}")]
    CorruptState { key: String, reason: String },

    // --- External systems: a retry may help. ---
    /// The Kafka client or broker.
    #[cfg(feature = "bus")]
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The sled state store.
    #[cfg(feature = "bus")]
    #[error("state store: {0}")]
    State(#[from] sled::Error),
    /// A file.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl Error {
    /// Whether retrying the operation unchanged may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Decode(_) | Error::Invalid(_) | Error::Fault(_) => false,
            Error::Schema { .. } | Error::Encode { .. } | Error::CorruptState { .. } => false,
            #[cfg(feature = "bus")]
            Error::Kafka(e) => !kafka_is_permanent(e),
            #[cfg(feature = "bus")]
            Error::State(_) => true,
            Error::Io { .. } => true,
        }
    }
}

/// Whether the broker (or librdkafka's own check) refused the message itself: sending it again fails
/// the same way. Everything else from Kafka (a timeout, a broker down, a leader moving) may pass later.
#[cfg(feature = "bus")]
fn kafka_is_permanent(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::MessageBatchTooLarge
                | C::InvalidRecord
        )
    )
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
