//! systemd readiness notification (`sd_notify`): a datagram such as
//! `READY=1` sent to the Unix socket named by `$NOTIFY_SOCKET` (a path, or
//! `@name` for the abstract namespace). Without the variable (not started
//! by systemd) it does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1\nSTATUS=..."`) to `$NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when the variable is not set.
///
/// # Errors
///
/// When the socket cannot be created or the datagram not sent.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target.to_string_lossy().into_owned();
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &target)?;
    }
    Ok(true)
}
