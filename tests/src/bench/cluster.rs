//! `bench cluster`.

/// Runs the `cluster` scenario.
///
/// # Errors
///
/// Always, until this scenario is built.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("benchmark scenario 'cluster' is not built yet (its issue is still open)")
}
