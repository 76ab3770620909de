//! [`Client::connect_unix`]: the client library over transportd's Unix
//! socket. The connection is a plain byte stream of frames; everything else
//! (registration, requests, common controls) is the generic client of
//! [`crate::client`].

use std::path::Path;

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
}
