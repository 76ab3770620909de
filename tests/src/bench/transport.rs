//! `bench transport`.

/// Runs the `transport` scenario.
///
/// # Errors
///
/// Always, until this scenario is built.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("benchmark scenario 'transport' is not built yet (its issue is still open)")
}
