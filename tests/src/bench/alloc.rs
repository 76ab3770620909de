//! `bench alloc`.

/// Runs the `alloc` scenario.
///
/// # Errors
///
/// Always, until this scenario is built.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("benchmark scenario 'alloc' is not built yet (its issue is still open)")
}
