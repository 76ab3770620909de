//! [`Client::connect_unix`]: the client library over transportd's Unix
//! socket. The connection is a plain byte stream of frames; everything else
//! (registration, requests, common controls) is the generic client of
//! [`crate::client`].

use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;

use crate::client::{Client, ClientError, Incoming};

impl Client {
    /// Connects to transportd's socket at `path` and registers as `name`.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if the socket cannot be reached; a
    /// registration error (e.g. transportd refused this user, or the
    /// well-known name is taken) as returned by [`Client::from_stream`].
    pub async fn connect_unix(
        path: impl AsRef<Path>,
        name: &str,
    ) -> Result<(Client, Incoming), ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                target: path.display().to_string(),
                source,
            })?;
        Client::from_stream(stream, name).await
    }

    /// [`Client::connect_unix`], tried again every 50 ms while the socket
    /// cannot be reached (transportd is starting), for up to `patience`.
    /// The daemons start this way.
    ///
    /// # Errors
    /// The last error once `patience` has passed; a registration error at
    /// once.
    pub async fn connect_unix_patiently(
        path: impl AsRef<Path>,
        name: &str,
        patience: Duration,
    ) -> Result<(Client, Incoming), ClientError> {
        let path = path.as_ref();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match Client::connect_unix(path, name).await {
                Err(e @ ClientError::Connect { .. }) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "transportd not ready yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }
}
