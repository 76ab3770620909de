//! `bench failover`.

/// Runs the `failover` scenario.
///
/// # Errors
///
/// Always, until this scenario is built.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("benchmark scenario 'failover' is not built yet (its issue is still open)")
}
