//! Arguments for the `forge` test client (src/bin/forge.rs), which sends
//! frames as an unprivileged user for the local-trust tests.

/// One `forge` step: `kind` (`request` or `event`) to `(pnn, service)`
/// with opcode `op` and the encoded `payload`, as the client parses it
/// (`KIND:PNN:SERVICE:OPCODE:HEX`).
#[must_use]
pub fn step(kind: &str, pnn: &str, service: &str, op: u32, payload: &[u8]) -> String {
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}:{pnn}:{service}:{op:#x}:{hex}")
}
