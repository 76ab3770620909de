//! `bench memory`.

/// Runs the `memory` scenario.
///
/// # Errors
///
/// Always, until this scenario is built.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("benchmark scenario 'memory' is not built yet (its issue is still open)")
}
